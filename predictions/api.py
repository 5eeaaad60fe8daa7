"""REST API v1: one view per resource action, small nested serializers, one error shape.

Every error body is ``{"error": {"code": ..., "message": ..., "field": ...}}``.
"""

from __future__ import annotations

import re
from typing import Any

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFilesSent
from django.http import Http404, HttpResponse
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import exceptions, serializers, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.throttling import UserRateThrottle
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from . import selectors, services
from .exceptions import ApplicationError
from .media import image_response
from .models import Prediction, PredictionStatus
from .selectors import PredictionFilters

MAX_WAIT_SECONDS = 30


# --- Errors -------------------------------------------------------------------

ErrorSerializer = inline_serializer(
    "Error",
    {
        "error": inline_serializer(
            "ErrorDetail",
            {
                "code": serializers.CharField(),
                "message": serializers.CharField(),
                "field": serializers.CharField(allow_null=True),
            },
        )
    },
)


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def _first_message(detail: Any) -> tuple[str, str | None]:
    """Flatten DRF's nested validation detail to (message, field)."""
    if isinstance(detail, dict):
        field, value = next(iter(detail.items()))
        message, _ = _first_message(value)
        return message, None if field == "non_field_errors" else str(field)
    if isinstance(detail, list) and detail:
        return _first_message(detail[0])
    return str(detail), None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """Map application and DRF errors to the one JSON error shape."""
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message, exc.field), status=exc.status_code)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("No such prediction.")
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


# --- Serializers ----------------------------------------------------------------


class PredictionUrlField(serializers.HyperlinkedIdentityField):
    """The prediction's absolute API URL (its poll / delete address)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            view_name="api:prediction-detail", lookup_field="id", lookup_url_kwarg="prediction_id", **kwargs
        )


class LabelScoreSerializer(serializers.Serializer):
    label = serializers.CharField()
    class_id = serializers.CharField()
    score = serializers.FloatField()


class PredictionOutputSerializer(serializers.Serializer):
    class TimingsSerializer(serializers.Serializer):
        queue = serializers.FloatField(source="queue_ms", allow_null=True)
        preprocess = serializers.FloatField(source="preprocess_ms", allow_null=True)
        inference = serializers.FloatField(source="inference_ms", allow_null=True)
        total = serializers.FloatField(source="total_ms", allow_null=True)

    class ModelSerializer(serializers.Serializer):
        name = serializers.CharField()
        version = serializers.CharField()

    class ImageSerializer(serializers.Serializer):
        url = serializers.SerializerMethodField(help_text="The uploaded image, for the same credentials")
        thumbnail_url = serializers.SerializerMethodField(help_text="A small JPEG of it (at most 160 px)")
        sha256 = serializers.CharField()
        width = serializers.IntegerField()
        height = serializers.IntegerField()
        filename = serializers.CharField(source="original_filename")

        def get_url(self, prediction: Prediction) -> str:
            return _absolute(self.context, reverse("api:prediction-image", args=[prediction.id]))

        def get_thumbnail_url(self, prediction: Prediction) -> str:
            return _absolute(self.context, reverse("api:prediction-image", args=[prediction.id])) + "?size=thumb"

    id = serializers.UUIDField()
    url = PredictionUrlField()
    status = serializers.ChoiceField(choices=PredictionStatus.choices)
    created_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    label = serializers.CharField(allow_blank=True)
    class_id = serializers.CharField(allow_blank=True)
    confidence = serializers.FloatField(allow_null=True)
    top_k = serializers.IntegerField()
    predictions = LabelScoreSerializer(many=True, source="top_predictions")
    timings_ms = TimingsSerializer(source="*")
    model = ModelSerializer(source="model_version", allow_null=True)
    image = ImageSerializer(source="*")
    error = serializers.CharField(allow_blank=True)
    cached = serializers.BooleanField(help_text="The result was reused: same bytes, same model, classified before")


class SubmittedSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    status = serializers.CharField(help_text="pending, or succeeded at once when the result is cached")
    cached = serializers.BooleanField()
    url = PredictionUrlField()
    created_at = serializers.DateTimeField()
    filename = serializers.CharField(source="original_filename")


def _absolute(context: dict[str, Any], path: str) -> str:
    request = context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


# --- Views ----------------------------------------------------------------------


class SubmitRateThrottle(UserRateThrottle):
    """Per-user limit on submissions only (``THROTTLE_SUBMIT``); reads are not throttled."""

    scope = "submit"

    def allow_request(self, request: Request, view: APIView) -> bool:
        if request.method != "POST":
            return True
        return super().allow_request(request, view)


class PredictionPagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 100


WAIT_PARAMETER = OpenApiParameter(
    "wait",
    {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
    description=f"Wait up to N seconds (max {MAX_WAIT_SECONDS}) for a final status before answering. "
    "The header `Prefer: wait=N` (RFC 7240) does the same.",
)


def _wait_seconds(request: Request) -> float:
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


class PredictionListCreateApi(AsyncAPIView):
    """Async, so a submission that waits for its result (``wait``) holds no web thread."""

    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [SubmitRateThrottle]

    class FilterSerializer(serializers.Serializer):
        status = serializers.ChoiceField(choices=PredictionStatus.choices, required=False)
        label = serializers.CharField(required=False)
        created_after = serializers.DateField(required=False)
        created_before = serializers.DateField(required=False)
        model_version = serializers.CharField(required=False)

    class InputSerializer(serializers.Serializer):
        # Files are validated by the service layer (one message per file); this checks the rest.
        top_k = serializers.IntegerField(min_value=1, max_value=settings.MAX_TOP_K, default=settings.DEFAULT_TOP_K)

    @extend_schema(
        parameters=[FilterSerializer],
        responses={200: PredictionOutputSerializer(many=True), 400: ErrorSerializer, 401: ErrorSerializer},
    )
    async def get(self, request: Request) -> Response:
        return await sync_to_async(self._list)(request)

    def _list(self, request: Request) -> Response:
        filters = self.FilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        queryset = selectors.prediction_list(user=request.user, filters=PredictionFilters(**filters.validated_data))
        paginator = PredictionPagination()
        page = paginator.paginate_queryset(queryset, request, view=self)
        context = {"request": request}
        return paginator.get_paginated_response(PredictionOutputSerializer(page, many=True, context=context).data)

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
    async def post(self, request: Request) -> Response:
        wait = _wait_seconds(request)
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
        body_serializer = PredictionOutputSerializer if wait else SubmittedSerializer
        done = all(p.is_final for p in created) if wait else False
        code = status.HTTP_201_CREATED if done else status.HTTP_202_ACCEPTED
        if len(outcomes) == 1:
            outcome = outcomes[0]
            if outcome.error is not None:
                raise outcome.error
            body = body_serializer(outcome.prediction, context=context).data
            return Response(body, status=code, headers={"Location": str(body["url"])})
        entries = [
            body_serializer(o.prediction, context=context).data
            if o.prediction is not None
            else {"filename": o.filename, **error_body(o.error.code, o.error.message, o.error.field)}
            for o in outcomes
        ]
        if not created:
            return Response(
                {**error_body("no_valid_images", "None of the files was accepted."), "results": entries},
                status=status.HTTP_400_BAD_REQUEST,
            )
        return Response(entries, status=code)

    def _create(self, request: Request, *, release_connection: bool) -> list[services.SubmissionOutcome]:
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
    """An async view: a long-polling client waits on an event, not on a web thread."""

    @extend_schema(
        parameters=[WAIT_PARAMETER],
        responses={200: PredictionOutputSerializer, 401: ErrorSerializer, 404: ErrorSerializer},
    )
    async def get(self, request: Request, prediction_id: str) -> Response:
        wait = _wait_seconds(request)
        prediction = await selectors.prediction_wait(user=request.user, prediction_id=prediction_id, seconds=wait)
        return Response(PredictionOutputSerializer(prediction, context={"request": request}).data)

    @extend_schema(responses={204: OpenApiResponse(description="Deleted"), 404: ErrorSerializer})
    async def delete(self, request: Request, prediction_id: str) -> Response:
        prediction = await selectors.prediction_aget(user=request.user, prediction_id=prediction_id)
        await sync_to_async(services.prediction_delete)(prediction=prediction)
        return Response(status=status.HTTP_204_NO_CONTENT)


class PredictionImageApi(APIView):
    """The uploaded image (or ``?size=thumb``), to its owner, with the API's credentials:
    a token client follows ``image.url`` with the token it already has."""

    @extend_schema(
        parameters=[OpenApiParameter("size", {"type": "string", "enum": ["thumb"]}, description="thumb: small JPEG")],
        responses={
            (200, "image/*"): OpenApiResponse(description="The image bytes"),
            401: ErrorSerializer,
            404: ErrorSerializer,
        },
    )
    def get(self, request: Request, prediction_id: str) -> HttpResponse:
        prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
        return image_response(prediction, thumbnail=request.query_params.get("size") == "thumb")


class ModelVersionListApi(APIView):
    class OutputSerializer(serializers.Serializer):
        name = serializers.CharField()
        version = serializers.CharField()
        is_active = serializers.BooleanField()
        input_size = serializers.IntegerField(source="metadata.input_size", allow_null=True)
        parameters = serializers.IntegerField(source="metadata.parameters", allow_null=True, default=None)
        created_at = serializers.DateTimeField()

    @extend_schema(responses={200: OutputSerializer(many=True), 401: ErrorSerializer})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(selectors.model_version_list(), many=True).data)


# --- Stats (appended) -----------------------------------------------------------
from .stats import DEFAULT_WINDOW_DAYS, WINDOW_DAYS, prediction_stats_cached  # noqa: E402


class LatencySummarySerializer(serializers.Serializer):
    count = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class LatencySetSerializer(serializers.Serializer):
    """Milliseconds, keyed like a prediction's ``timings_ms``."""

    queue = LatencySummarySerializer(source="queue_ms")
    preprocess = LatencySummarySerializer(source="preprocess_ms")
    inference = LatencySummarySerializer(source="inference_ms")
    total = LatencySummarySerializer(source="total_ms")


class StatsApi(APIView):
    """Aggregates over the last ``days`` days: staff see every user, others their own."""

    class InputSerializer(serializers.Serializer):
        days = serializers.ChoiceField(choices=list(WINDOW_DAYS), default=DEFAULT_WINDOW_DAYS)

    class OutputSerializer(serializers.Serializer):
        class Meta:
            ref_name = "Stats"

        class DaySerializer(serializers.Serializer):
            class Meta:
                ref_name = "StatsDay"

            day = serializers.DateField()
            predictions = serializers.IntegerField()
            latency_ms = LatencySetSerializer(source="latency")

        class ModelVersionSerializer(serializers.Serializer):
            class Meta:
                ref_name = "StatsModelVersion"

            name = serializers.CharField()
            version = serializers.CharField()
            predictions = serializers.IntegerField()
            mean_confidence = serializers.FloatField(allow_null=True)
            latency_ms = LatencySetSerializer(source="latency")

        class BucketSerializer(serializers.Serializer):
            class Meta:
                ref_name = "StatsHistogramBucket"

            upper_ms = serializers.FloatField(allow_null=True, help_text="null: above the last bound")
            count = serializers.IntegerField()

        class LabelSerializer(serializers.Serializer):
            class Meta:
                ref_name = "StatsLabel"

            label = serializers.CharField()
            count = serializers.IntegerField()

        days = serializers.IntegerField()
        since = serializers.DateTimeField()
        all_users = serializers.BooleanField()
        total = serializers.IntegerField()
        succeeded = serializers.IntegerField()
        failed = serializers.IntegerField()
        pending = serializers.IntegerField(help_text="pending + running")
        distinct_users = serializers.IntegerField()
        latency_ms = LatencySetSerializer(source="latency")
        per_day = DaySerializer(many=True)
        per_model_version = ModelVersionSerializer(many=True)
        histogram_field = serializers.CharField()
        histogram = BucketSerializer(many=True)
        top_labels = LabelSerializer(many=True)
        mean_confidence = serializers.FloatField(allow_null=True)
        low_confidence_share = serializers.FloatField(allow_null=True)
        low_confidence_threshold = serializers.FloatField()

    @extend_schema(
        parameters=[InputSerializer],
        responses={200: OutputSerializer, 400: ErrorSerializer, 401: ErrorSerializer},
    )
    def get(self, request: Request) -> Response:
        options = self.InputSerializer(data=request.query_params)
        options.is_valid(raise_exception=True)
        report = prediction_stats_cached(user=request.user, days=options.validated_data["days"])
        return Response(self.OutputSerializer(report).data)
