"""Review API: the owner confirms a prediction or corrects its label, and withdraws either."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.core.validators import RegexValidator
from django.urls import reverse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response

from accounts.http import AuthenticatedRequest
from predictions import selectors
from predictions.api.base import AsyncAPIView
from predictions.api.deprecation import form_body_headers
from predictions.api.errors import ErrorSerializer
from predictions.api.inputs import JsonInputSerializer
from predictions.api.throttles import SubmitRateThrottle
from predictions.models import Correction
from predictions.reviews import services as review_services


class PredictionCorrectionApi(AsyncAPIView):
    """The owner says the prediction is wrong and gives the right label (a second
    correction replaces the first)."""

    throttle_classes = [SubmitRateThrottle]

    class InputSerializer(JsonInputSerializer):
        """The right label."""

        class Meta:
            ref_name = "CorrectionLabel"

        # As sent (the service folds its whitespace), so the schema's limits are the server's:
        # 1-200 characters, at least one of them not a space.
        # A field named label shadows Field.label in the stubs (typeddjango/djangorestframework-stubs#78).
        label = serializers.CharField(  # type: ignore[assignment]
            max_length=200,
            trim_whitespace=False,
            validators=[RegexValidator(r"\S", "Give the right label.")],
            help_text="The right label: one of the model's class labels (any case) or, with `new_class`, a new one",
        )
        new_class = serializers.BooleanField(
            default=False,
            help_text="true: `label` is a class the model does not have, on purpose. Needed for any label that "
            "is not one of the model's classes",
        )

    class OutputSerializer(serializers.Serializer[Any]):
        class Meta:
            ref_name = "Correction"

        class ModelSerializer(serializers.Serializer[Any]):
            class Meta:
                ref_name = "CorrectionModel"

            name = serializers.CharField()
            version = serializers.CharField()

        prediction = serializers.UUIDField(source="prediction.id")
        url = serializers.SerializerMethodField(help_text="The prediction's API URL")
        confirmed = serializers.BooleanField(
            help_text="true: the owner confirmed the model's label; false: they corrected it"
        )
        # A field named label shadows Field.label in the stubs (typeddjango/djangorestframework-stubs#78).
        label = serializers.CharField(help_text="The right label")  # type: ignore[assignment]
        class_id = serializers.CharField(
            allow_blank=True, help_text="The model class the label matches; empty for a new class"
        )
        new_class = serializers.BooleanField(help_text="true: a class the model does not have (the owner said so)")
        predicted_label = serializers.CharField(allow_blank=True, help_text="What the model said")
        model = ModelSerializer(source="model_version", allow_null=True, help_text="The version that predicted")
        created_at = serializers.DateTimeField()
        updated_at = serializers.DateTimeField()

        def get_url(self, correction: Correction) -> str:
            path = reverse("api:prediction-detail", args=[correction.prediction_id])
            request = self.context.get("request")
            return request.build_absolute_uri(path) if request is not None else path

    @extend_schema(
        # JSON only: a form body is still read, deprecated (api.deprecation.FORM_BODY).
        request={"application/json": InputSerializer},
        responses={
            200: OutputSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
            429: ErrorSerializer,
        },
        description="`label`: one of the model's class labels (matched ignoring case; the answer spells it "
        "as the model does and gives its `class_id`; `GET /api/v1/models/` lists them), or, with "
        '`"new_class": true`, a class the model does not have (`class_id` empty, `new_class` true). A label '
        "that is none of the model's classes without `new_class` is 400 `unknown_class`, whose message names "
        "the closest classes. It replaces the prediction's confirmation or earlier correction. 400 for an "
        "empty label; 409 `conflict` for the label the model gave (say that with `POST .../confirmation/`) "
        "or unless the prediction succeeded. The prediction's own result is not changed.",
    )
    async def post(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        prediction = await selectors.prediction_aget(user=request.user, prediction_id=prediction_id)
        options = self.InputSerializer(data=request.data)
        options.is_valid(raise_exception=True)
        correction = await sync_to_async(review_services.correction_set)(
            prediction=prediction,
            user=request.user,
            label=options.validated_data["label"],
            new_class=options.validated_data["new_class"],
        )
        body = self.OutputSerializer(correction, context={"request": request}).data
        return Response(body, headers=form_body_headers(request))


class PredictionConfirmationApi(AsyncAPIView):
    """The owner says the prediction is right (it replaces an earlier correction)."""

    throttle_classes = [SubmitRateThrottle]

    @extend_schema(
        request=None,
        responses={
            200: PredictionCorrectionApi.OutputSerializer,
            401: ErrorSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
            429: ErrorSerializer,
        },
        description="No body. Records that the model's label is right: the answer is the prediction's review "
        "with `confirmed` true and the model's own `label` and `class_id`. It replaces a correction; "
        "confirming twice keeps one confirmation. 409 `conflict` unless the prediction succeeded. "
        "Confirmations count in the stats' live top-1 (confirmed / reviewed).",
    )
    async def post(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        prediction = await selectors.prediction_aget(user=request.user, prediction_id=prediction_id)
        confirmation = await sync_to_async(review_services.prediction_confirm)(prediction=prediction, user=request.user)
        return Response(PredictionCorrectionApi.OutputSerializer(confirmation, context={"request": request}).data)


class _ReviewWithdrawApi(AsyncAPIView):
    """Withdraw the owner's review of one kind (``confirmed``)."""

    confirmed = False

    async def delete(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        prediction = await selectors.prediction_aget(user=request.user, prediction_id=prediction_id)
        await sync_to_async(review_services.correction_withdraw)(prediction=prediction, confirmed=self.confirmed)
        return Response(status=status.HTTP_204_NO_CONTENT)


_WITHDRAW_RESPONSES = {204: OpenApiResponse(description="Withdrawn"), 401: ErrorSerializer, 404: ErrorSerializer}


class PredictionCorrectionWithdrawApi(_ReviewWithdrawApi):
    """Withdraw the owner's correction: the prediction is unreviewed again."""

    confirmed = False

    @extend_schema(
        responses=_WITHDRAW_RESPONSES,
        description="404 when the prediction is not the user's or has no correction (a confirmation is "
        "withdrawn with `DELETE .../confirmation/`).",
    )
    async def delete(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        return await super().delete(request, prediction_id)


class PredictionConfirmationWithdrawApi(_ReviewWithdrawApi):
    """Withdraw the owner's confirmation: the prediction is unreviewed again."""

    confirmed = True

    @extend_schema(
        responses=_WITHDRAW_RESPONSES,
        description="404 when the prediction is not the user's or has no confirmation (a correction is "
        "withdrawn with `DELETE .../correction/`).",
    )
    async def delete(self, request: AuthenticatedRequest, prediction_id: str) -> Response:
        return await super().delete(request, prediction_id)
