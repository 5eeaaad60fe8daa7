"""Stats API view: the same report as the stats page, as JSON."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import AuthenticatedRequest
from predictions.api.errors import ErrorSerializer
from predictions.api.throttles import ReadRateThrottle
from predictions.operations.stats import DEFAULT_WINDOW_DAYS, WINDOW_DAYS, ModelComparison, prediction_stats_cached


class LatencySummarySerializer(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    mean = serializers.FloatField(allow_null=True)
    p50 = serializers.FloatField(allow_null=True)
    p95 = serializers.FloatField(allow_null=True)
    p99 = serializers.FloatField(allow_null=True)


class LatencySetSerializer(serializers.Serializer[Any]):
    """Milliseconds, keyed like a prediction's ``timings_ms``."""

    queue = LatencySummarySerializer(source="queue_ms")
    preprocess = LatencySummarySerializer(source="preprocess_ms")
    inference = LatencySummarySerializer(source="inference_ms")
    total = LatencySummarySerializer(source="total_ms")


class StatsApi(APIView):
    """Aggregates over the last ``days`` days: accounts with ``predictions.view_prediction``
    see every user, others their own."""

    throttle_classes = [ReadRateThrottle]

    class InputSerializer(serializers.Serializer[Any]):
        days = serializers.ChoiceField(choices=list(WINDOW_DAYS), default=DEFAULT_WINDOW_DAYS)
        scope = serializers.ChoiceField(
            choices=["all", "mine"],
            default="all",
            help_text="mine: only your own predictions, also for accounts that may read everyone's",
        )

    class OutputSerializer(serializers.Serializer[Any]):
        class Meta:
            ref_name = "Stats"

        class DaySerializer(serializers.Serializer[Any]):
            class Meta:
                ref_name = "StatsDay"

            day = serializers.DateField()
            predictions = serializers.IntegerField()
            latency_ms = LatencySetSerializer(source="latency")

        class ModelVersionSerializer(serializers.Serializer[Any]):
            class Meta:
                ref_name = "StatsModelVersion"

            name = serializers.CharField()
            version = serializers.CharField()
            predictions = serializers.IntegerField()
            mean_confidence = serializers.FloatField(allow_null=True)
            low_confidence_share = serializers.FloatField(
                allow_null=True, help_text="Share of its predictions below low_confidence_threshold"
            )
            corrections = serializers.IntegerField(help_text="Of its succeeded predictions, how many users corrected")
            new_classes = serializers.IntegerField(
                help_text="Of those corrections, how many name a class the model does not have (`new_class`)"
            )
            correction_rate = serializers.FloatField(
                allow_null=True,
                help_text="corrections / predictions. 1 - correction_rate bounds live top-1 accuracy from above: "
                "an uncorrected prediction may be unreviewed, not right",
            )
            reviewed = serializers.IntegerField(
                help_text="Of its succeeded predictions, how many users reviewed: confirmed + corrections"
            )
            confirmed = serializers.IntegerField(help_text="Of its succeeded predictions, how many users confirmed")
            live_top1 = serializers.FloatField(
                allow_null=True,
                help_text="confirmed / reviewed: top-1 accuracy measured on users' feedback; null when none "
                "was reviewed. Only as good as the sample: owners review the predictions they choose to",
            )
            latency_ms = LatencySetSerializer(source="latency")

        class ComparisonSerializer(serializers.Serializer[Any]):
            """An A/B test: the active version and the candidate, with the same figures as
            their per_model_version entries."""

            class Meta:
                ref_name = "StatsModelComparison"

            traffic_percent = serializers.IntegerField(help_text="The candidate's share of users")
            active = serializers.SerializerMethodField()
            candidate = serializers.SerializerMethodField()

            def get_active(self, comparison: ModelComparison) -> dict[str, Any]:
                return dict(StatsApi.OutputSerializer.ModelVersionSerializer(comparison.active).data)

            def get_candidate(self, comparison: ModelComparison) -> dict[str, Any]:
                return dict(StatsApi.OutputSerializer.ModelVersionSerializer(comparison.candidate).data)

        class ActiveModelSerializer(serializers.Serializer[Any]):
            class Meta:
                ref_name = "StatsActiveModel"

            name = serializers.CharField()
            version = serializers.CharField()
            trained_at = serializers.DateTimeField(allow_null=True, help_text="metadata.json created")
            registered_at = serializers.DateTimeField()
            classes = serializers.IntegerField()
            metrics = serializers.DictField(
                child=serializers.CharField(),
                help_text="ModelVersion.metrics (the model card's evaluation) by dotted name, "
                "e.g. test_photos.top1_accuracy",
            )
            evaluation_top1 = serializers.FloatField(
                allow_null=True, help_text="The card's top-1 accuracy; null when the card has none"
            )
            evaluation_top1_metric = serializers.CharField(
                allow_blank=True, help_text="Which of metrics evaluation_top1 is"
            )
            live_top1 = serializers.FloatField(
                source="stats.live_top1",
                allow_null=True,
                help_text="Its per_model_version live_top1 (confirmed / reviewed in this window)",
            )
            reviewed = serializers.IntegerField(
                source="stats.reviewed", allow_null=True, help_text="Its per_model_version reviewed"
            )

        class BucketSerializer(serializers.Serializer[Any]):
            class Meta:
                ref_name = "StatsHistogramBucket"

            upper_ms = serializers.FloatField(allow_null=True, help_text="null: above the last bound")
            count = serializers.IntegerField()

        class LabelSerializer(serializers.Serializer[Any]):
            class Meta:
                ref_name = "StatsLabel"

            # A field named label shadows Field.label in the stubs (typeddjango/djangorestframework-stubs#78).
            label = serializers.CharField()  # type: ignore[assignment]
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
        comparison = ComparisonSerializer(
            allow_null=True, help_text="Active vs the A/B candidate; null when no candidate is being tested"
        )
        active_model = ActiveModelSerializer(
            allow_null=True, help_text="The active version's card; its figures are its per_model_version entry"
        )
        histogram_field = serializers.CharField()
        histogram = BucketSerializer(many=True)
        top_labels = LabelSerializer(many=True)
        mean_confidence = serializers.FloatField(allow_null=True)
        low_confidence_share = serializers.FloatField(allow_null=True)
        low_confidence_threshold = serializers.FloatField()

    @extend_schema(
        parameters=[InputSerializer],
        responses={200: OutputSerializer, 400: ErrorSerializer, 401: ErrorSerializer, 429: ErrorSerializer},
    )
    def get(self, request: AuthenticatedRequest) -> Response:
        # A plain dict: in a QueryDict DRF reads `?scope=` as "not given"; the schema says it is no scope.
        options = self.InputSerializer(data=request.query_params.dict())
        options.is_valid(raise_exception=True)
        report = prediction_stats_cached(
            user=request.user, days=options.validated_data["days"], own=options.validated_data["scope"] == "mine"
        )
        return Response(self.OutputSerializer(report).data)


# The comparison's two sides have the per-version shape; a nested class cannot name its
# sibling in its body, so the schema learns it here.
for _side in (StatsApi.OutputSerializer.ComparisonSerializer.get_active,
              StatsApi.OutputSerializer.ComparisonSerializer.get_candidate):  # fmt: skip
    extend_schema_field(StatsApi.OutputSerializer.ModelVersionSerializer)(_side)
