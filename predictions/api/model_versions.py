"""Model versions API view: which models exist and which one is active."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from .. import selectors
from .errors import ErrorSerializer
from .throttles import ReadRateThrottle


class ModelVersionListApi(APIView):
    throttle_classes = [ReadRateThrottle]

    class OutputSerializer(serializers.Serializer[Any]):
        name = serializers.CharField()
        version = serializers.CharField()
        is_active = serializers.BooleanField()
        input_size = serializers.IntegerField(source="metadata.input_size", allow_null=True)
        parameters = serializers.IntegerField(source="metadata.parameters", allow_null=True, default=None)
        created_at = serializers.DateTimeField()

    @extend_schema(responses={200: OutputSerializer(many=True), 401: ErrorSerializer, 429: ErrorSerializer})
    def get(self, request: Request) -> Response:
        return Response(self.OutputSerializer(selectors.model_version_list(), many=True).data)
