"""Prediction API views, one per action: list, submit, poll, delete, retry, correction,
confirmation (and withdrawing either), image.

List and submit share ``/api/v1/predictions/``, poll and delete share
``/api/v1/predictions/<id>/``; ``method_dispatch`` routes each method to its view.
Submit, poll and delete are async (adrf): a request that waits for a result (``wait``)
holds no web thread.
"""

from __future__ import annotations

import re
from typing import Any

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http.response import HttpResponseBase
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import AuthenticatedRequest
from predictions import selectors, services
from predictions.selectors import PredictionFilters

from ..exceptions import ApplicationError
from ..media import image_response
from ..models import PredictionStatus
from .errors import ErrorSerializer, error_body
from .negotiation import AnyAccept
from .serializers import PredictionOutputSerializer, PredictionUrlField
from .throttles import ReadRateThrottle, SubmitRateThrottle

MAX_WAIT_SECONDS = 30


WAIT_PARAMETER = OpenApiParameter(
    "wait",
    {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
    description=f"Wait up to N seconds (max {MAX_WAIT_SECONDS}) for a final status before answering. "
    "The header `Prefer: wait=N` (RFC 7240) does the same.",
)


def wait_seconds(request: Request) -> float:
    """Seconds to wait, from ``?wait=N`` or ``Prefer: wait=N``; 0 when neither is given."""
    raw = request.query_params.get("wait")
    if raw is None:
        prefer = request.headers.get("Prefer", "")
        match = re.search(r"(?:^|[,;\s])wait=([^,;\s]+)", prefer)
        raw = match.group(1) if match else "0"
    try:
        seconds = float(raw)
    except ValueError as error:
        raise ApplicationError("wait must be a number of seconds.", field="wait") from error
    if seconds != seconds:  # NaN
        return 0.0
    return min(max(seconds, 0.0), MAX_WAIT_SECONDS)


class PredictionPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100


class PredictionListApi(AsyncAPIView):
    """The user's own predictions, newest first, filtered and paginated."""

    throttle_classes = [ReadRateThrottle]
    pagination_class = PredictionPagination  # read by the schema generator

    class FilterSerializer(serializers.Serializer[Any]):
        status = serializers.ChoiceField(choices=PredictionStatus.choices, required=False)
        # A field named label shadows Field.label in the stubs (typeddjango/djangorestframework-stubs#78).
        label = serializers.CharField(required=False)  # type: ignore[assignment]
        created_after = serializers.DateField(required=False)
        created_before = serializers.DateField(required=False)
        model_version = serializers.CharField(required=False)

    @extend_schema(
        parameters=[FilterSerializer],
        responses={
            200: PredictionOutputSerializer(many=True),
            400: ErrorSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
            429: ErrorSerializer,
        },
    )
    async def get(self, request: AuthenticatedRequest) -> Response:
        return await sync_to_async(self._list)(request)

    def _list(self, request: AuthenticatedRequest) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = selectors.prediction_list(user=request.user, filters=PredictionFilters(**filters.validated_data))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        context = {"request": request}
        return paginator.get_paginated_response(PredictionOutputSerializer(page, many=True, context=context).data)


class PredictionCreateApi(AsyncAPIView):
    """Submit one or several images; with ``wait``, answer once they are classified."""

    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [SubmitRateThrottle]

    class InputSerializer(serializers.Serializer[Any]):
        # Files are validated by the service layer (one message per file); this checks the rest.
        top_k = serializers.IntegerField(min_value=1, max_value=settings.MAX_TOP_K, default=settings.DEFAULT_TOP_K)

    class SubmittedSerializer(serializers.Serializer[Any]):
        id = serializers.UUIDField()
        status = serializers.CharField(help_text="pending, or succeeded at once when the result is cached")
        cached = serializers.BooleanField()
        url = PredictionUrlField()
        created_at = serializers.DateTimeField()
        filename = serializers.CharField(source="original_filename")

    @extend_schema(
        parameters=[WAIT_PARAMETER],
        request={
            "multipart/form-data": inline_serializer(
                "SubmitRequest",
                {
                    "image": serializers.ListField(child=serializers.FileField()),
                    "top_k": serializers.IntegerField(min_value=1, max_value=settings.MAX_TOP_K, required=False),
                },
            )
        },
        responses={
            201: PredictionOutputSerializer,
            202: SubmittedSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
            429: ErrorSerializer,
        },
        description="Submit one image (202 with one object and a Location header) or several "
        "`image` fields (202 with a list, one entry per file in order). With `wait`, the answer "
        "comes once every accepted image is final (201, full results) or when the wait is over "
        "(202, full objects still pending): one request from upload to label.",
    )
    async def post(self, request: AuthenticatedRequest) -> Response:
        wait = wait_seconds(request)
        outcomes = await sync_to_async(self._create)(request, release_connection=bool(wait))
        context = {"request": request}
        created = [o.prediction for o in outcomes if o.prediction is not None]
        if wait and created:
            final = await selectors.predictions_wait(
                user=request.user, prediction_ids=[p.id for p in created], seconds=wait
            )
            by_id = {p.id: p for p in final}
            for outcome in outcomes:
                if outcome.prediction is not None:
                    outcome.prediction = by_id[outcome.prediction.id]
            created = final
        body_serializer = PredictionOutputSerializer if wait else self.SubmittedSerializer
        done = all(p.is_final for p in created) if wait else False
        code = status.HTTP_201_CREATED if done else status.HTTP_202_ACCEPTED
        if len(outcomes) == 1:
            outcome = outcomes[0]
            if outcome.error is not None:
                raise outcome.error
            body = body_serializer(outcome.prediction, context=context).data
            return Response(body, status=code, headers={"Location": str(body["url"])})
        entries = [
            {"filename": o.filename, **error_body(o.error.code, o.error.message, o.error.field)}
            if o.error is not None
            else body_serializer(o.prediction, context=context).data
            for o in outcomes
        ]
        if not created:
            return Response(
                {**error_body("no_valid_images", "None of the files was accepted."), "results": entries},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(entries, status=code)

    def _create(self, request: AuthenticatedRequest, *, release_connection: bool) -> list[services.SubmissionOutcome]:
        files = request.FILES.getlist("image")
        if not files:
            raise ApplicationError("Attach an image file in the multipart field 'image'.", field="image")
        options = self.InputSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        outcomes = services.prediction_create_many(
            user=request.user, uploaded_files=files, top_k=options.validated_data["top_k"]
        )
        if release_connection:  # about to wait: do not hold a pooled connection meanwhile
            selectors.connection_release()
        return outcomes


class PredictionDetailApi(AsyncAPIView):
    """Poll one prediction; with ``wait``, a long-poll that waits on an event, not on a web thread."""

    throttle_classes = [ReadRateThrottle]

    @extend_schema(
        parameters=[WAIT_PARAMETER],
        responses={200: PredictionOutputSerializer, 401: ErrorSerializer, 404: ErrorSerializer, 429: ErrorSerializer},
    )
    async def get(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        wait = wait_seconds(request)
        prediction = await selectors.prediction_wait(user=request.user, prediction_id=prediction_id, seconds=wait)
        return Response(PredictionOutputSerializer(prediction, context={"request": request}).data)


class PredictionDeleteApi(AsyncAPIView):
    """Delete one prediction and its image."""

    @extend_schema(responses={204: OpenApiResponse(description="Deleted"), 404: ErrorSerializer})
    async def delete(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        prediction = await selectors.prediction_aget(user=request.user, prediction_id=prediction_id)
        await sync_to_async(services.prediction_delete)(prediction=prediction)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PredictionRetryApi(AsyncAPIView):
    """Send one of the user's failed predictions to the workers again."""

    throttle_classes = [SubmitRateThrottle]

    @extend_schema(
        request=None,
        responses={
            202: PredictionOutputSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
            429: ErrorSerializer,
        },
        description="202 with the prediction, pending again (poll its `url`). Only a failed prediction "
        "is retried: a pending, running or succeeded one is left as it is and answers 409 `conflict`.",
    )
    async def post(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        prediction = await selectors.prediction_aget(user=request.user, prediction_id=prediction_id)
        retried = await sync_to_async(services.prediction_retry)(prediction=prediction)
        body = PredictionOutputSerializer(retried, context={"request": request}).data
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": str(body["url"])})


class PredictionImageApi(APIView):
    """The uploaded image (or ``?size=thumb``), to its owner, with the API's credentials:
    a token client follows ``image.url`` with the token it already has."""

    throttle_classes = [ReadRateThrottle]
    content_negotiation_class = AnyAccept

    @extend_schema(
        parameters=[OpenApiParameter("size", {"type": "string", "enum": ["thumb"]}, description="thumb: small JPEG")],
        responses={
            (200, "image/*"): OpenApiResponse(description="The image bytes"),
            401: ErrorSerializer,
            404: ErrorSerializer,
            429: ErrorSerializer,
        },
    )
    def get(self, request: AuthenticatedRequest, prediction_id: str) -> HttpResponseBase:
        prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
        return image_response(prediction, thumbnail=request.query_params.get("size") == "thumb")
