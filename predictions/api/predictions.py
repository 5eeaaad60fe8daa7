"""Prediction API views, one per action: list, poll, delete, retry, image (submitting
one image or a batch: ``api.submissions``).

List and submit share ``/api/v1/predictions/``, poll and delete share
``/api/v1/predictions/<id>/``; ``method_dispatch`` routes each method to its view.
Submit, poll and delete are async (adrf): a request that waits for a result (``wait``,
``api.waiting``) holds no web thread.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import AuthenticatedRequest
from predictions import selectors, services
from predictions.api.base import AsyncAPIView
from predictions.selectors import PredictionFilters

from ..exceptions import ApplicationError
from ..images import MEDIA_TYPES
from ..media import image_response
from ..models import PredictionStatus
from .bodies import prediction_body
from .errors import ErrorSerializer
from .negotiation import AnyAccept
from .serializers import (
    PredictionOutputSerializer,
)
from .throttles import ReadRateThrottle, SubmitRateThrottle
from .waiting import WAIT_PARAMETERS, wait_seconds

# What the image view can answer: the upload as stored (any supported format) or its JPEG thumbnail.
IMAGE_MEDIA_TYPES = sorted(set(MEDIA_TYPES.values()))


class PredictionPagination(PageNumberPagination):
    """``page`` (from 1) and ``page_size`` (from 1; above 100 gives 100): a value that is
    not a whole number from 1 is a 400, not silently the first page or the default size."""

    page_size_query_param = "page_size"
    max_page_size = 100
    last_page_strings = ()  # the schema says page is a number: "last" is not one

    def paginate_queryset(self, queryset: Any, request: Request, view: Any = None) -> list[Any] | None:
        for name in (self.page_query_param, self.page_size_query_param):
            raw = request.query_params.get(name)
            if raw is not None and not (raw.isascii() and raw.isdigit() and int(raw) >= 1):
                raise ApplicationError(f"{name} must be a whole number from 1.", field=name)
        return super().paginate_queryset(queryset, request, view)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = f"Results per page (default {self.page_size}, at most {self.max_page_size})."
        return parameters


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
        # A plain dict, not the QueryDict: DRF reads an empty value in a form as "not given",
        # and `?status=` is not a status (the schema says so), so it is a 400 like any other.
        filters = self.FilterSerializer(data=request.query_params.dict())
        filters.is_valid(raise_exception=True)
        queryset = selectors.prediction_list(user=request.user, filters=PredictionFilters(**filters.validated_data))
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        context = {"request": request}
        return paginator.get_paginated_response(PredictionOutputSerializer(page, many=True, context=context).data)


class PredictionDetailApi(AsyncAPIView):
    """Poll one prediction; with ``wait``, a long-poll that waits on an event, not on a web thread."""

    throttle_classes = [ReadRateThrottle]

    @extend_schema(
        parameters=WAIT_PARAMETERS,
        responses={
            200: PredictionOutputSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
            429: ErrorSerializer,
        },
    )
    async def get(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        wait = wait_seconds(request)
        prediction = await selectors.prediction_wait(user=request.user, prediction_id=prediction_id, seconds=wait)
        return Response(prediction_body(prediction, request))


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
        body = prediction_body(retried, request)
        return Response(body, status=status.HTTP_202_ACCEPTED, headers={"Location": body["url"]})


class PredictionImageApi(APIView):
    """The uploaded image (or ``?size=thumb``), to its owner, with the API's credentials:
    a token client follows ``image.url`` with the token it already has."""

    throttle_classes = [ReadRateThrottle]
    content_negotiation_class = AnyAccept

    @extend_schema(
        parameters=[OpenApiParameter("size", {"type": "string", "enum": ["thumb"]}, description="thumb: small JPEG")],
        responses={
            **{
                (200, media_type): OpenApiResponse(
                    OpenApiTypes.BINARY,
                    description="The image as uploaded (its own format), or with `size=thumb` a JPEG of at most 160 px",
                )
                for media_type in IMAGE_MEDIA_TYPES
            },
            400: ErrorSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
            429: ErrorSerializer,
        },
    )
    def get(self, request: AuthenticatedRequest, prediction_id: str) -> HttpResponseBase:
        size = request.query_params.get("size")
        if size not in (None, "thumb"):
            raise ApplicationError("size is thumb, or absent for the image as uploaded.", field="size")
        prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
        return image_response(prediction, thumbnail=size == "thumb")
