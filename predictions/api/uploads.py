"""Direct uploads (``MEDIA_STORAGE=s3``): ask for a presigned PUT (``POST /api/v1/uploads/``),
PUT the image to the store, then commit it (``POST /api/v1/uploads/{id}/commit/``), which
answers as a submit does. The web process never receives the image (services.uploads)."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.validators import ProhibitNullCharactersValidator
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from accounts.http import AuthenticatedRequest
from predictions import events, selectors, services
from predictions.api.base import AsyncAPIView
from predictions.models import Prediction

from .bodies import prediction_body
from .errors import ErrorSerializer
from .inputs import JsonInputSerializer
from .serializers import PredictionOutputSerializer
from .submissions import SUBMIT_RESPONSE_HEADERS
from .throttles import SubmitRateThrottle
from .waiting import WAIT_PARAMETERS, wait_seconds


class _AnyText(serializers.CharField):
    """A string as the schema says, any characters (NUL and lone surrogates too): the
    service keeps only a file name's printable characters and refuses a type it does not
    know (415) as the submit does, without echoing it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(trim_whitespace=False, **kwargs)  # as sent: the schema's limits are the server's
        refused = (ProhibitNullCharactersValidator, ProhibitSurrogateCharactersValidator)
        self.validators = [v for v in self.validators if not isinstance(v, refused)]


class DirectUploadCreateApi(AsyncAPIView):
    """Ask for a presigned PUT of one image to the object store."""

    parser_classes = [JSONParser]
    throttle_classes = [SubmitRateThrottle]

    class InputSerializer(JsonInputSerializer):
        class Meta:
            ref_name = "DirectUploadDeclaration"

        filename = _AnyText(max_length=1024, help_text="The image's file name, shown in the history")
        content_type = _AnyText(
            max_length=100, help_text="The image's media type: image/jpeg, image/png, image/webp, image/avif, ..."
        )
        size = serializers.IntegerField(min_value=0, help_text="The image's size in bytes, exactly")
        top_k = serializers.IntegerField(
            min_value=1,
            max_value=settings.MAX_TOP_K,
            default=settings.DEFAULT_TOP_K,
            help_text=f"How many classes to keep, best first (default {settings.DEFAULT_TOP_K})",
        )

    class OutputSerializer(serializers.Serializer[Any]):
        class Meta:
            ref_name = "DirectUpload"

        id = serializers.CharField(help_text="The upload id (opaque): commit with it")
        url = serializers.URLField(help_text="PUT the image's bytes here, with `headers`")
        method = serializers.CharField(help_text="Always PUT")
        headers = serializers.DictField(
            child=serializers.CharField(),
            help_text="Send exactly these (Content-Type, Content-Length, If-None-Match): the store refuses another "
            "type or size, and a second PUT to the same URL (412)",
        )
        expires_at = serializers.DateTimeField(help_text="The URL is refused after this")
        commit_by = serializers.DateTimeField(help_text="The commit is refused (410) after this")
        commit_url = serializers.URLField(help_text="POST here once the PUT succeeded")

    @extend_schema(
        request={"application/json": InputSerializer},
        responses={
            201: OutputSerializer,
            400: OpenApiResponse(ErrorSerializer, description="A missing or bad field; an empty file"),
            401: ErrorSerializer,
            409: OpenApiResponse(
                ErrorSerializer,
                description="`direct_upload_unavailable`: the server keeps media on local disk; submit with "
                "`POST /api/v1/predictions/` instead",
            ),
            413: OpenApiResponse(ErrorSerializer, description="`too_large`: `size` over the upload limit"),
            415: OpenApiResponse(
                ErrorSerializer, description="`unsupported_media_type`: not a supported image type, or not JSON"
            ),
            429: ErrorSerializer,
            503: OpenApiResponse(ErrorSerializer, description="`storage_unavailable`: try again"),
        },
        description="A direct upload, for servers with object storage (`MEDIA_STORAGE=s3`): the image goes "
        "straight to the store, never through the web process. The answer has a presigned `url`: PUT the "
        "image's bytes there with exactly `headers` before `expires_at`, then `POST commit_url` (which answers "
        "as a submit does). Refused as a submit would be (`too_large`, `unsupported_media_type`, the submit "
        "throttle) before anything is signed. With media on local disk: 409 `direct_upload_unavailable`.",
    )
    async def post(self, request: AuthenticatedRequest) -> Response:
        options = self.InputSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        upload = await sync_to_async(services.direct_upload_create)(
            user=request.user,
            filename=options.validated_data["filename"],
            content_type=options.validated_data["content_type"],
            size_bytes=options.validated_data["size"],
            top_k=options.validated_data["top_k"],
        )
        commit_url = request.build_absolute_uri(reverse("api:upload-commit", args=[upload.id]))
        body = {
            "id": upload.id,
            "url": upload.url,
            "method": "PUT",
            "headers": upload.headers,
            "expires_at": upload.expires_at.isoformat().replace("+00:00", "Z"),
            "commit_by": upload.commit_by.isoformat().replace("+00:00", "Z"),
            "commit_url": commit_url,
        }
        return Response(body, status=status.HTTP_201_CREATED)


class DirectUploadCommitApi(AsyncAPIView):
    """Turn an uploaded image into a prediction; with ``wait``, answer once it is classified."""

    @extend_schema(
        request=None,
        parameters=[
            OpenApiParameter("upload_id", str, location=OpenApiParameter.PATH, description="The upload's `id`"),
            *WAIT_PARAMETERS,
            *SUBMIT_RESPONSE_HEADERS,
        ],
        responses={
            201: OpenApiResponse(PredictionOutputSerializer, description="Classified within the wait: final"),
            202: OpenApiResponse(
                PredictionOutputSerializer,
                description="Accepted, not final yet (no wait, or the wait ran out): poll `Location`",
            ),
            400: OpenApiResponse(
                ErrorSerializer,
                description="A bad `wait`; `upload_mismatch` (the stored file has another size or format than "
                "declared); an image a submit would refuse (`invalid_image`, `image_too_costly`). The object "
                "is deleted",
            ),
            401: ErrorSerializer,
            404: OpenApiResponse(ErrorSerializer, description="No such upload of yours"),
            409: OpenApiResponse(
                ErrorSerializer,
                description="`already_committed`; `upload_missing` (nothing was PUT yet); "
                "`direct_upload_unavailable` (media on local disk)",
            ),
            410: OpenApiResponse(ErrorSerializer, description="`upload_expired`: past `commit_by`; ask again"),
            415: OpenApiResponse(
                ErrorSerializer, description="`unsupported_media_type`: the stored file is not a supported image"
            ),
            503: OpenApiResponse(ErrorSerializer, description="`storage_unavailable`: try again"),
        },
        description="Commit a direct upload once its PUT succeeded: the server checks the stored object "
        "(its size, and its header as a submit checks an upload), creates the prediction and queues it. "
        "Answers as `POST /api/v1/predictions/` does: 202 with the prediction and its URL in `Location`, or "
        "with `wait` 201 once it is final. Each upload commits once; a refused one writes nothing.",
    )
    async def post(self, request: AuthenticatedRequest, upload_id: str) -> Response:
        wait = wait_seconds(request)
        if not wait:
            prediction = await sync_to_async(services.direct_upload_commit)(user=request.user, upload_id=upload_id)
            return self._answer(request, prediction, code=status.HTTP_202_ACCEPTED)
        # Listening from before the row is queued, as a waiting submit does.
        async with events.prediction_final_subscription(()) as subscription:
            prediction = await sync_to_async(self._commit)(request, upload_id, subscription)
            [prediction] = await selectors.predictions_wait(
                user=request.user,
                prediction_ids=[prediction.id],
                seconds=wait,
                subscription=subscription,
                known=[prediction],
            )
        return self._answer(request, prediction, code=201 if prediction.is_final else 202)

    def _commit(self, request: AuthenticatedRequest, upload_id: str, subscription: events.Subscription) -> Prediction:
        prediction = services.direct_upload_commit(
            user=request.user, upload_id=upload_id, before_queue=subscription.add
        )
        selectors.connection_release()  # about to wait: do not hold a pooled connection meanwhile
        return prediction

    def _answer(self, request: AuthenticatedRequest, prediction: Prediction, *, code: int) -> Response:
        body = prediction_body(prediction, request)
        return Response(body, status=code, headers={"Location": body["url"]})
