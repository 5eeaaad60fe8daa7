"""Stats API view: the same report as the stats page, as JSON."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import AuthenticatedRequest

from ..stats import DEFAULT_WINDOW_DAYS, WINDOW_DAYS, prediction_stats_cached
from .errors import ErrorSerializer
from .throttles import ReadRateThrottle


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
            latency_ms = LatencySetSerializer(source="latency")

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
        options = self.InputSerializer(data=request.query_params)
        options.is_valid(raise_exception=True)
        report = prediction_stats_cached(user=request.user, days=options.validated_data["days"])
        return Response(self.OutputSerializer(report).data)
