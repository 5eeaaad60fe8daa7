"""Prediction API views, one per action: list, submit one, submit a batch, poll, delete,
retry, image.

List and submit share ``/api/v1/predictions/``, poll and delete share
``/api/v1/predictions/<id>/``; ``method_dispatch`` routes each method to its view.
Submit, poll and delete are async (adrf): a request that waits for a result (``wait``,
``api.waiting``) holds no web thread.
"""

from __future__ import annotations

from typing import Any

from adrf.views import APIView as AsyncAPIView
from asgiref.sync import sync_to_async
from django.conf import settings
from django.http.response import HttpResponseBase
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
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
from ..images import MEDIA_TYPES
from ..media import image_response
from ..models import PredictionStatus
from .deprecation import MULTI_IMAGE_SUBMIT
from .errors import ErrorSerializer, error_body
from .negotiation import AnyAccept
from .serializers import (
    BatchErrorSerializer,
    BatchSerializer,
    PredictionOutputSerializer,
    PredictionUrlField,
    SubmittedPredictionSerializer,
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


class _SubmitApi(AsyncAPIView):
    """What one-image and batch submission share: the files of the multipart field
    ``image``, ``top_k``, and waiting for the results when asked to."""

    parser_classes = [MultiPartParser, FormParser]
    throttle_classes = [SubmitRateThrottle]

    class InputSerializer(serializers.Serializer[Any]):
        # Files are validated by the service layer (one message per file); this checks the rest.
        top_k = serializers.IntegerField(min_value=1, max_value=settings.MAX_TOP_K, default=settings.DEFAULT_TOP_K)

    async def _submit(self, request: AuthenticatedRequest) -> tuple[list[services.SubmissionOutcome], float, bool]:
        """The outcome of each file in order (predictions re-read after the wait), the
        wait asked for, and whether every accepted prediction is final."""
        wait = wait_seconds(request)
        outcomes = await sync_to_async(self._create)(request, release_connection=bool(wait))
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
        return outcomes, wait, bool(created) and all(p.is_final for p in created)

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


SUBMIT_RESPONSE_HEADERS = [
    OpenApiParameter(
        "Location",
        {"type": "string", "format": "uri"},
        location=OpenApiParameter.HEADER,
        required=True,
        response=[201, 202],
        description="The prediction's URL (its `url`): poll it, or long-poll it with `?wait=`",
    )
]


class PredictionCreateApi(_SubmitApi):
    """Submit one image; with ``wait``, answer once it is classified."""

    class LegacySubmittedSerializer(serializers.Serializer[Any]):
        """An entry of the deprecated multi-image answer, as it always was (until its Sunset)."""

        id = serializers.UUIDField()
        status = serializers.CharField()
        cached = serializers.BooleanField()
        url = PredictionUrlField()
        created_at = serializers.DateTimeField()
        filename = serializers.CharField(source="original_filename")

    @extend_schema(
        parameters=[*WAIT_PARAMETERS, *SUBMIT_RESPONSE_HEADERS],
        request={
            "multipart/form-data": inline_serializer(
                "PredictionSubmit",
                {
                    "image": serializers.FileField(help_text="The image: JPEG, PNG, WebP, AVIF, GIF, BMP or TIFF"),
                    "top_k": serializers.IntegerField(
                        min_value=1,
                        max_value=settings.MAX_TOP_K,
                        required=False,
                        help_text=f"How many classes to keep, best first (default {settings.DEFAULT_TOP_K})",
                    ),
                },
            )
        },
        responses={
            201: OpenApiResponse(SubmittedPredictionSerializer, description="Classified within the wait: final"),
            202: OpenApiResponse(
                SubmittedPredictionSerializer,
                description="Accepted, not final yet (no wait, or the wait ran out): poll `Location`",
            ),
            400: ErrorSerializer,
            401: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
            429: ErrorSerializer,
        },
        description="Submit one image: 202 with the prediction, pending, and its URL in `Location`. With "
        "`wait`, the answer comes once it is final (201) or when the wait is over (202): one request from "
        "upload to label. Several images: `POST /api/v1/predictions/batch/`. (Several `image` parts here are "
        "the deprecated form: answered with a bare list and `Deprecation` / `Sunset` headers until its "
        "Sunset, see the changelog.)",
    )
    async def post(self, request: AuthenticatedRequest) -> Response:
        outcomes, wait, done = await self._submit(request)
        # Serialized in a thread: the answer reads related rows (the model version).
        return await sync_to_async(self._answer)(request, outcomes, wait=wait, done=done)

    def _answer(
        self, request: AuthenticatedRequest, outcomes: list[services.SubmissionOutcome], *, wait: float, done: bool
    ) -> Response:
        code = status.HTTP_201_CREATED if wait and done else status.HTTP_202_ACCEPTED
        context = {"request": request}
        if len(outcomes) > 1:
            return self._legacy_list(request, outcomes, wait=wait, code=code)
        outcome = outcomes[0]
        if outcome.error is not None:
            raise outcome.error
        body = SubmittedPredictionSerializer(outcome.prediction, context=context).data
        return Response(body, status=code, headers={"Location": str(body["url"])})

    def _legacy_list(
        self, request: AuthenticatedRequest, outcomes: list[services.SubmissionOutcome], *, wait: float, code: int
    ) -> Response:
        """Several files sent here: the bare list this URL answered before the batch
        endpoint, with the deprecation headers (deprecation.MULTI_IMAGE_SUBMIT)."""
        context = {"request": request}
        body_serializer = PredictionOutputSerializer if wait else self.LegacySubmittedSerializer
        entries = [
            {"filename": o.filename, **error_body(o.error.code, o.error.message, o.error.field)}
            if o.error is not None
            else body_serializer(o.prediction, context=context).data
            for o in outcomes
        ]
        headers = MULTI_IMAGE_SUBMIT.headers(request)
        if all(o.error is not None for o in outcomes):
            body = {**error_body("no_valid_images", "None of the files was accepted."), "results": entries}
            return Response(body, status=status.HTTP_400_BAD_REQUEST, headers=headers)
        return Response(entries, status=code, headers=headers)


class PredictionBatchCreateApi(_SubmitApi):
    """Submit several images at once; each gets its own prediction, or its own error."""

    @extend_schema(
        parameters=WAIT_PARAMETERS,
        request={
            "multipart/form-data": inline_serializer(
                "PredictionBatchSubmit",
                {
                    "image": serializers.ListField(
                        child=serializers.FileField(),
                        min_length=1,
                        max_length=settings.MAX_FILES_PER_REQUEST,
                        help_text="The images, one `image` part each",
                    ),
                    "top_k": serializers.IntegerField(
                        min_value=1,
                        max_value=settings.MAX_TOP_K,
                        required=False,
                        help_text=f"How many classes to keep for each, best first (default {settings.DEFAULT_TOP_K})",
                    ),
                },
            )
        },
        responses={
            201: OpenApiResponse(BatchSerializer, description="Every accepted image classified within the wait"),
            202: OpenApiResponse(BatchSerializer, description="Accepted; some not final yet: poll each `url`"),
            400: OpenApiResponse(
                BatchErrorSerializer,
                description="No file, a bad `top_k`, too many files, or none of them accepted "
                "(`no_valid_images`, with `results` saying why for each)",
            ),
            401: ErrorSerializer,
            413: ErrorSerializer,
            415: ErrorSerializer,
            429: ErrorSerializer,
        },
        description="Submit up to MAX_FILES_PER_REQUEST images, one `image` part each: `results` has one entry "
        "per file in the order sent, with its prediction or, for a file refused, its error (the others go on). "
        "With `wait`, the answer comes once every accepted image is final (201) or when the wait is over (202).",
    )
    async def post(self, request: AuthenticatedRequest) -> Response:
        outcomes, wait, done = await self._submit(request)
        # Serialized in a thread: the answer reads related rows (the model version).
        return await sync_to_async(self._answer)(request, outcomes, wait=wait, done=done)

    def _answer(
        self, request: AuthenticatedRequest, outcomes: list[services.SubmissionOutcome], *, wait: float, done: bool
    ) -> Response:
        context = {"request": request}
        results = [
            {
                "filename": o.filename,
                "prediction": o.prediction,
                "error": None if o.error is None else error_body(o.error.code, o.error.message, o.error.field)["error"],
            }
            for o in outcomes
        ]
        if all(o.error is not None for o in outcomes):
            body = {
                **error_body("no_valid_images", "None of the files was accepted."),
                "results": BatchSerializer({"results": results}, context=context).data["results"],
            }
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        code = status.HTTP_201_CREATED if wait and done else status.HTTP_202_ACCEPTED
        return Response(BatchSerializer({"results": results}, context=context).data, status=code)


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
