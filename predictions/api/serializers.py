"""Output serializers shared by several API views: a prediction as the list, the poll and
a submission return it, and a batch of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.urls import reverse
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from ..models import Prediction, PredictionStatus
from .errors import ErrorDetailSerializer


class PredictionUrlField(serializers.HyperlinkedIdentityField):
    """The prediction's absolute API URL (its poll / delete address)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            view_name="api:prediction-detail", lookup_field="id", lookup_url_kwarg="prediction_id", **kwargs
        )


class LabelScoreSerializer(serializers.Serializer[Any]):
    # A field named label shadows Field.label in the stubs (typeddjango/djangorestframework-stubs#78).
    label = serializers.CharField()  # type: ignore[assignment]
    class_id = serializers.CharField()
    score = serializers.FloatField()
    # Only from a multi-label model: absent for a single-label one.
    positive = serializers.BooleanField(
        required=False, help_text="Multi-label models only: the score reached this class's threshold"
    )


class PredictionOutputSerializer(serializers.Serializer[Any]):
    class TimingsSerializer(serializers.Serializer[Any]):
        queue = serializers.FloatField(source="queue_ms", allow_null=True)
        preprocess = serializers.FloatField(source="preprocess_ms", allow_null=True)
        inference = serializers.FloatField(source="inference_ms", allow_null=True)
        total = serializers.FloatField(source="total_ms", allow_null=True)

    class ModelSerializer(serializers.Serializer[Any]):
        name = serializers.CharField()
        version = serializers.CharField()

    class UncertaintySerializer(serializers.Serializer[Any]):
        entropy = serializers.FloatField(
            allow_null=True,
            help_text="Entropy of the probabilities over ln(number of classes): 0 = certain, 1 = uniform "
            "(multi-label: mean binary entropy of the class scores over ln 2)",
        )
        margin = serializers.FloatField(
            allow_null=True,
            help_text="Top-1 minus top-2 probability (multi-label: the closest class score's distance from its "
            "threshold)",
        )

    class ImageSerializer(serializers.Serializer[Any]):
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
    # A field named label shadows Field.label in the stubs (typeddjango/djangorestframework-stubs#78).
    label = serializers.CharField(allow_blank=True)  # type: ignore[assignment]
    class_id = serializers.CharField(allow_blank=True)
    confidence = serializers.FloatField(allow_null=True)
    top_k = serializers.IntegerField()
    predictions = LabelScoreSerializer(many=True, source="top_predictions")
    labels = LabelScoreSerializer(
        many=True,
        source="passing_labels",
        allow_null=True,
        help_text="Multi-label models only: every class the image has (score at or above the class's threshold), "
        "highest score first; null for a single-label model",
    )
    uncertainty = UncertaintySerializer(
        source="*", help_text="How sure the model was; both null until it succeeded (and for older predictions)"
    )
    uncertain = serializers.BooleanField(
        allow_null=True,
        help_text='"Not sure": entropy above or margin below the model\'s calibrated thresholds (multi-label: no '
        "class reached its threshold); the top label is then a guess, see predictions for the candidates. "
        "Null until it succeeded, and for predictions made before it was recorded",
    )
    timings_ms = TimingsSerializer(source="*")
    model = ModelSerializer(source="model_version", allow_null=True)
    image = ImageSerializer(source="*")
    error = serializers.CharField(allow_blank=True)
    cached = serializers.BooleanField(help_text="The result was reused: same bytes, same model, classified before")


def _absolute(context: Mapping[str, Any], path: str) -> str:
    request = context.get("request")
    return request.build_absolute_uri(path) if request is not None else path


@extend_schema_serializer(deprecate_fields=["filename"])
class SubmittedPredictionSerializer(PredictionOutputSerializer):
    """The answer to a submission: the prediction as a poll shows it. ``filename`` is the
    old submit answer's field, kept until its removal is announced (it is ``image.filename``)."""

    filename = serializers.CharField(source="original_filename", help_text="Deprecated: read image.filename")


class BatchEntrySerializer(serializers.Serializer[Any]):
    """One file of a batch, in the order sent: its prediction, or why it was refused."""

    class Meta:
        ref_name = "PredictionBatchEntry"

    filename = serializers.CharField(help_text="The file's name as sent")
    prediction = PredictionOutputSerializer(allow_null=True, help_text="null when the file was refused")
    error = ErrorDetailSerializer(allow_null=True, help_text="Why the file was refused; null when accepted")


class BatchSerializer(serializers.Serializer[Any]):
    class Meta:
        ref_name = "PredictionBatch"

    results = BatchEntrySerializer(many=True)


class BatchErrorSerializer(serializers.Serializer[Any]):
    """400: the request was refused; ``results`` says why each file was when none was accepted."""

    class Meta:
        ref_name = "PredictionBatchError"

    error = ErrorDetailSerializer()
    results = BatchEntrySerializer(many=True, required=False, help_text="Present when every file was refused")
