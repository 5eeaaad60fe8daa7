"""Explanation API: the Grad-CAM overlay of one of the user's predictions for one class."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http.response import HttpResponseBase
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import AuthenticatedRequest
from predictions import selectors
from predictions.api.errors import ErrorSerializer
from predictions.api.negotiation import AnyAccept
from predictions.api.throttles import ReadRateThrottle, SubmitRateThrottle
from predictions.exceptions import ExplanationFailedError
from predictions.explanations import selectors as explanation_selectors
from predictions.explanations import services as explanations
from predictions.media import explanation_response
from predictions.models import Explanation, ExplanationStatus

POLL_AFTER_SECONDS = 1


def explanation_url(explanation: Explanation) -> str:
    """``/api/v1/predictions/<id>/explanation/?class_id=<class>``: where it is polled and fetched."""
    path = reverse("api:prediction-explanation", args=[explanation.prediction_id])
    return f"{path}?{urlencode({'class_id': explanation.class_id})}"


CLASS_ID_PARAMETER = OpenApiParameter(
    "class_id",
    {"type": "string", "maxLength": 20},
    description="One of the prediction's top-k `class_id`s (its `predictions`); empty or absent: the top class.",
)
LOCATION_HEADER = OpenApiParameter(
    "Location",
    {"type": "string", "format": "uri"},
    location=OpenApiParameter.HEADER,
    required=True,
    response=[202],
    description="Where the explanation is read: this URL with `class_id` resolved",
)
RETRY_AFTER_HEADER = OpenApiParameter(
    "Retry-After",
    {"type": "integer"},
    location=OpenApiParameter.HEADER,
    required=True,
    response=[202],
    description="Seconds to wait before reading it again",
)
PENDING_RESPONSE = OpenApiResponse(
    inline_serializer(
        "ExplanationPending",
        {"status": serializers.CharField(), "class_id": serializers.CharField(help_text="The class explained")},
    ),
    description='`{"status": "pending"}` while the worker computes it: GET the `Location` header '
    "(this URL with the `class_id` resolved) after `Retry-After` seconds.",
)


class _ExplanationQuery(serializers.Serializer[Any]):
    class_id = serializers.CharField(required=False, allow_blank=True, max_length=20)


def _class_id(request: AuthenticatedRequest) -> str | None:
    query = _ExplanationQuery(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    return query.validated_data.get("class_id") or None


def _pending(request: AuthenticatedRequest, explanation: Explanation) -> Response:
    return Response(
        {"status": explanation.status, "class_id": explanation.class_id},
        status=status.HTTP_202_ACCEPTED,
        headers={
            "Location": request.build_absolute_uri(explanation_url(explanation)),
            "Retry-After": str(POLL_AFTER_SECONDS),
        },
    )


class PredictionExplanationRequestApi(APIView):
    """Ask for the Grad-CAM of one of the user's succeeded predictions for one of its
    top-k classes; the inference worker computes it and keeps it."""

    throttle_classes = [SubmitRateThrottle]

    @extend_schema(
        request=None,
        parameters=[
            CLASS_ID_PARAMETER,
            LOCATION_HEADER,
            OpenApiParameter(
                "Location",
                {"type": "string", "format": "uri"},
                location=OpenApiParameter.HEADER,
                required=True,
                response=[200],
                description="Where the PNG is read",
            ),
            RETRY_AFTER_HEADER,
        ],
        responses={
            200: OpenApiResponse(
                inline_serializer(
                    "ExplanationReady",
                    {
                        "status": serializers.CharField(),
                        "class_id": serializers.CharField(help_text="The class explained"),
                    },
                ),
                description='`{"status": "succeeded"}`: already computed; GET the `Location` header for the PNG.',
            ),
            202: PENDING_RESPONSE,
            400: OpenApiResponse(ErrorSerializer, description="`class_id` longer than any class id (20)"),
            401: ErrorSerializer,
            404: OpenApiResponse(ErrorSerializer, description="No such prediction of yours"),
            409: OpenApiResponse(
                ErrorSerializer,
                description="The prediction has not succeeded, or `class_id` is not one of its top-k classes "
                "(`conflict`), or computing the explanation failed (`explanation_failed`, with the reason; a "
                "request a minute later tries again)",
            ),
            429: OpenApiResponse(
                ErrorSerializer,
                description="Too many requests (`THROTTLE_SUBMIT`, shared with submissions), or as many of your "
                "explanations pending as one user may have (`EXPLANATIONS_PENDING_PER_USER`); code `throttled`, "
                "with `Retry-After`",
            ),
        },
        description="Grad-CAM (gradient-weighted class activation map) of the model version that made the "
        "prediction, on its last convolutional feature map, with the same preprocessing as classification. "
        "Queues it for the inference worker and answers 202 with `Location`; once computed, GET that URL for "
        "the PNG. Asking again for a stored one changes nothing (200); one still pending after the reconcile "
        "threshold, or failed a minute ago or longer, is sent again.",
    )
    def post(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        class_id = _class_id(request)
        prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
        explanation = explanations.explanation_request(prediction=prediction, user=request.user, class_id=class_id)
        if explanation.status == ExplanationStatus.FAILED:
            raise ExplanationFailedError(explanation.error, field="class_id")
        if explanation.status == ExplanationStatus.SUCCEEDED:
            location = request.build_absolute_uri(explanation_url(explanation))
            return Response(
                {"status": explanation.status, "class_id": explanation.class_id}, headers={"Location": location}
            )
        return _pending(request, explanation)


class PredictionExplanationApi(APIView):
    """The Grad-CAM overlay of one of the user's predictions for one class, once requested."""

    throttle_classes = [ReadRateThrottle]
    content_negotiation_class = AnyAccept  # the PNG whatever the client accepts

    @extend_schema(
        parameters=[CLASS_ID_PARAMETER, LOCATION_HEADER, RETRY_AFTER_HEADER],
        responses={
            (200, "image/png"): OpenApiResponse(
                OpenApiTypes.BINARY,
                description="The image with the heat map blended over it (jet colours: red where the class's "
                "score depends most on the image, blue least; the margins the model never saw are darkened), "
                "at the image's size up to 1024 px on the longer side.",
            ),
            202: PENDING_RESPONSE,
            400: OpenApiResponse(ErrorSerializer, description="`class_id` longer than any class id (20)"),
            401: ErrorSerializer,
            404: OpenApiResponse(
                ErrorSerializer,
                description="No such prediction of yours, or no explanation of this class was requested "
                "(request one with POST; a prediction re-run by another model version is explained again)",
            ),
            409: OpenApiResponse(
                ErrorSerializer,
                description="Computing the explanation failed (`explanation_failed`, with the reason; POST to try "
                "again a minute later)",
            ),
            429: ErrorSerializer,
        },
        description="Reads the explanation requested with POST: 202 while the worker computes it, then 200 "
        "with the PNG. A GET never queues anything.",
    )
    def get(self, request: AuthenticatedRequest, prediction_id: str) -> HttpResponseBase:
        class_id = _class_id(request)
        prediction = selectors.prediction_get(user=request.user, prediction_id=prediction_id)
        explanation = explanation_selectors.explanation_get(prediction=prediction, class_id=class_id)
        if explanation.status == ExplanationStatus.SUCCEEDED:
            return explanation_response(explanation)
        if explanation.status == ExplanationStatus.FAILED:
            raise ExplanationFailedError(explanation.error, field="class_id")
        return _pending(request, explanation)
