"""Submission API views: one image (``POST /api/v1/predictions/``, sharing its URL with
the list through ``method_dispatch``) and a batch (``POST /api/v1/predictions/batch/``).

Both are async (adrf): a submission that waits for its results (``wait``, ``api.waiting``)
holds no web thread. Several images sent to the one-image view are the deprecated form
(``api.deprecation.MULTI_IMAGE_SUBMIT``), answered as before until its Sunset.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.http import AuthenticatedRequest
from predictions import events, selectors, services
from predictions.api.base import AsyncAPIView
from predictions.models import PredictionId

from ..exceptions import ApplicationError
from .bodies import prediction_body
from .deprecation import MULTI_IMAGE_SUBMIT
from .errors import ErrorSerializer, error_body
from .serializers import (
    BatchErrorSerializer,
    BatchSerializer,
    PredictionUrlField,
    SubmittedPredictionSerializer,
)
from .throttles import SubmitRateThrottle
from .waiting import WAIT_PARAMETERS, wait_seconds


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
        if not wait:
            return await sync_to_async(self._create)(request, before_queue=None), wait, False
        # Listening from before the rows are queued: the wait starts without reading them again.
        async with events.prediction_final_subscription(()) as subscription:
            outcomes = await sync_to_async(self._create)(request, before_queue=subscription.add)
            done = await outcomes_wait(user=request.user, outcomes=outcomes, seconds=wait, subscription=subscription)
        return outcomes, wait, done

    def _create(
        self, request: AuthenticatedRequest, *, before_queue: Callable[[Sequence[PredictionId]], None] | None
    ) -> list[services.SubmissionOutcome]:
        files = request.FILES.getlist("image")
        if not files:
            raise ApplicationError("Attach an image file in the multipart field 'image'.", field="image")
        options = self.InputSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        outcomes = services.prediction_create_many(
            user=request.user, uploaded_files=files, top_k=options.validated_data["top_k"], before_queue=before_queue
        )
        if before_queue is not None:  # about to wait: do not hold a pooled connection meanwhile
            selectors.connection_release()
        return outcomes


async def outcomes_wait(
    *, user: User, outcomes: list[services.SubmissionOutcome], seconds: float, subscription: events.Subscription
) -> bool:
    """Wait for a submission's accepted rows (``subscription`` was opened before they were
    queued) and put them, re-read, into ``outcomes``: whether every one of them is final.
    The submit views and the fast path (``api.fastpath``) both wait through here."""
    created = [o.prediction for o in outcomes if o.prediction is not None]
    if created:
        created = await selectors.predictions_wait(
            user=user, prediction_ids=[p.id for p in created], seconds=seconds, subscription=subscription, known=created
        )
        by_id = {p.id: p for p in created}
        for outcome in outcomes:
            if outcome.prediction is not None:
                outcome.prediction = by_id[outcome.prediction.id]
    return bool(created) and all(p.is_final for p in created)


def submitted_answer(
    outcome: services.SubmissionOutcome, request: Request | HttpRequest, *, wait: float, done: bool
) -> Response:
    """The answer to one image: 201 when final within the wait, else 202, with ``Location``;
    a refused image raises its error (the exception handler answers it)."""
    if outcome.error is not None:
        raise outcome.error
    assert outcome.prediction is not None  # an outcome has one or the other
    code = status.HTTP_201_CREATED if wait and done else status.HTTP_202_ACCEPTED
    body = prediction_body(outcome.prediction, request, submitted=True)
    return Response(body, status=code, headers={"Location": body["url"]})


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
            400: OpenApiResponse(
                ErrorSerializer,
                description="A bad `top_k`, or an image that cannot be accepted: damaged (`invalid_image`), or "
                "whose decode would cost more than `MAX_DECODE_BYTES` even reduced (`image_too_costly`, saying "
                "how large it may be)",
            ),
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
        # Written in the event loop: every row comes with its model version (no query).
        return self._answer(request, outcomes, wait=wait, done=done)

    def _answer(
        self, request: AuthenticatedRequest, outcomes: list[services.SubmissionOutcome], *, wait: float, done: bool
    ) -> Response:
        if len(outcomes) > 1:
            code = status.HTTP_201_CREATED if wait and done else status.HTTP_202_ACCEPTED
            return self._legacy_list(request, outcomes, wait=wait, code=code)
        return submitted_answer(outcomes[0], request, wait=wait, done=done)

    def _legacy_list(
        self, request: AuthenticatedRequest, outcomes: list[services.SubmissionOutcome], *, wait: float, code: int
    ) -> Response:
        """Several files sent here: the bare list this URL answered before the batch
        endpoint, with the deprecation headers (deprecation.MULTI_IMAGE_SUBMIT)."""
        context = {"request": request}
        entries = [
            {"filename": o.filename, **error_body(o.error.code, o.error.message, o.error.field)}
            if o.error is not None
            else prediction_body(o.prediction, request)
            if wait and o.prediction is not None
            else self.LegacySubmittedSerializer(o.prediction, context=context).data
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
        # Written in the event loop: every row comes with its model version (no query).
        return self._answer(request, outcomes, wait=wait, done=done)

    def _answer(
        self, request: AuthenticatedRequest, outcomes: list[services.SubmissionOutcome], *, wait: float, done: bool
    ) -> Response:
        # What BatchSerializer answers, written directly (api.bodies).
        results = [
            {
                "filename": o.filename,
                "prediction": None if o.prediction is None else prediction_body(o.prediction, request),
                "error": None if o.error is None else error_body(o.error.code, o.error.message, o.error.field)["error"],
            }
            for o in outcomes
        ]
        if all(o.error is not None for o in outcomes):
            body = {**error_body("no_valid_images", "None of the files was accepted."), "results": results}
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        code = status.HTTP_201_CREATED if wait and done else status.HTTP_202_ACCEPTED
        return Response({"results": results}, status=code)
