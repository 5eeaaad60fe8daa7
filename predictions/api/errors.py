"""The API's one error shape and the exception handler that produces it.

Every error body is ``{"error": {"code": ..., "message": ..., "field": ...}}``.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, serializers, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ..exceptions import ApplicationError


class ErrorDetailSerializer(serializers.Serializer[Any]):
    """What went wrong: a stable ``code`` to branch on, a ``message`` for people, and the
    request ``field`` it is about (null when it is about the request as a whole)."""

    class Meta:
        ref_name = "ErrorDetail"

    code = serializers.CharField()
    message = serializers.CharField()
    field = serializers.CharField(allow_null=True)


class ErrorSerializer(serializers.Serializer[Any]):
    """For the schema: the body of every 4xx and 5xx answer of the API."""

    class Meta:
        ref_name = "Error"

    error = ErrorDetailSerializer()


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map application and DRF errors to the one JSON error shape (REST_FRAMEWORK["EXCEPTION_HANDLER"])."""
    if isinstance(exc, ApplicationError):
        headers = {"Retry-After": str(exc.retry_after_seconds)} if exc.retry_after_seconds else None
        return Response(error_body(exc.code, exc.message, exc.field), status=exc.status_code, headers=headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("No such prediction.")
    if isinstance(exc, exceptions.ParseError | TooManyFieldsSent):
        # DRF's own text names the parser's internals ("Multipart form parse error - Invalid
        # boundary in multipart: None"); people get what to send instead.
        exc = exceptions.ParseError(
            "The request body could not be read. Send the image as multipart/form-data in the field 'image', "
            "other bodies as the JSON object the API reference shows."
        )
    if isinstance(exc, TooManyFilesSent):
        return Response(
            error_body("too_many_files", f"Send at most {settings.MAX_FILES_PER_REQUEST} images at a time.", "image"),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("too_large", "The request body is larger than the configured limit."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.APIException):
        message, field = _first_message(exc.detail)
        code = exc.get_codes()
        while isinstance(code, dict | list):
            code = next(iter(code.values())) if isinstance(code, dict) else code[0]
        response.data = error_body(str(code), message, field)
    return response


def _first_message(detail: Any) -> tuple[str, str | None]:
    """Flatten DRF's nested validation detail to (message, field)."""
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        message, _ = _first_message(value)
        return message, None if field == "non_field_errors" else str(field)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail), None
