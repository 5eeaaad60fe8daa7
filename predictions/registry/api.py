"""Model versions API views: which models exist, which one is active, switching it.

Reading is open to every signed-in client; activating a version, rolling back, setting
a candidate's share of traffic (A/B test) and the history of switches need
``predictions.change_modelversion`` (``predictions.access``).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.http import AuthenticatedRequest
from predictions.api.deprecation import form_body_headers
from predictions.api.errors import ErrorSerializer
from predictions.api.inputs import JsonInputSerializer
from predictions.api.permissions import CanChangeModelVersions
from predictions.api.throttles import ReadRateThrottle
from predictions.exceptions import NotFoundError
from predictions.models import ModelActivationKind, ModelVersion, ModelVersionStatus
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services


class ModelVersionOutputSerializer(serializers.Serializer[Any]):
    class ClassSerializer(serializers.Serializer[Any]):
        class_id = serializers.CharField()
        # A field named label shadows Field.label in the stubs (typeddjango/djangorestframework-stubs#78).
        label = serializers.CharField()  # type: ignore[assignment]

    class ParentSerializer(serializers.Serializer[Any]):
        name = serializers.CharField()
        version = serializers.CharField()

    name = serializers.CharField()
    version = serializers.CharField()
    status = serializers.ChoiceField(choices=ModelVersionStatus.choices)
    is_active = serializers.BooleanField()
    traffic_percent = serializers.IntegerField(help_text="A/B test: the share of users a candidate classifies for")
    input_size = serializers.IntegerField(source="metadata.input_size", allow_null=True)
    parameters = serializers.IntegerField(source="metadata.parameters", allow_null=True, default=None)
    num_classes = serializers.SerializerMethodField()
    classes = ClassSerializer(many=True, help_text="The output classes in index order (labels.json)")
    metrics = serializers.DictField(help_text="The model card's figures (metadata.json)")
    parent = ParentSerializer(allow_null=True, help_text="The version it was fine-tuned from, when registered")
    exported_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField(help_text="When it was registered")

    def get_num_classes(self, model_version: ModelVersion) -> int:
        return len(model_version.classes)


class ModelActivationOutputSerializer(serializers.Serializer[Any]):
    model = serializers.CharField(source="model_version.key", help_text="name:version made active")
    previous = serializers.CharField(source="previous.key", allow_null=True, default=None)
    kind = serializers.ChoiceField(choices=ModelActivationKind.choices)
    activated_by = serializers.CharField(source="activated_by.username", allow_null=True, default=None)
    activated_at = serializers.DateTimeField()


def _model_version_or_404(*, name: str, version: str) -> ModelVersion:
    try:
        return registry_selectors.model_version_get(name=name, version=version)
    except ModelVersion.DoesNotExist as error:
        raise NotFoundError(f"No model version {name}:{version} is registered.") from error


class ModelVersionListApi(APIView):
    throttle_classes = [ReadRateThrottle]

    @extend_schema(responses={200: ModelVersionOutputSerializer(many=True), 401: ErrorSerializer, 429: ErrorSerializer})
    def get(self, request: Request) -> Response:
        return Response(ModelVersionOutputSerializer(registry_selectors.model_version_list(), many=True).data)


class ModelVersionActivateApi(APIView):
    """Make one version the one new predictions use (recorded with who and when)."""

    permission_classes = [CanChangeModelVersions]

    @extend_schema(
        request=None,
        responses={
            200: ModelVersionOutputSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
            503: ErrorSerializer,
        },
        description="200 with the version, now active (activating the active one changes nothing). "
        "409 for a retired version; 503 when its files are missing.",
    )
    def post(self, request: AuthenticatedRequest, name: str, version: str) -> Response:
        model_version = _model_version_or_404(name=name, version=version)
        activated = registry_services.model_version_activate(model_version=model_version, user=request.user)
        return Response(ModelVersionOutputSerializer(activated).data)


class ModelVersionUpdateApi(APIView):
    """Set a candidate's share of traffic (A/B test): that share of users, each always
    on the same side, get their new predictions from it instead of the active version."""

    permission_classes = [CanChangeModelVersions]

    class InputSerializer(JsonInputSerializer):
        """What a PATCH changes: the candidate's share of traffic."""

        class Meta:
            ref_name = "ModelVersionUpdate"

        traffic_percent = serializers.IntegerField(min_value=0, max_value=100)

    @extend_schema(
        # JSON only: a form body is still read, deprecated (api.deprecation.FORM_BODY).
        request={"application/json": InputSerializer},
        responses={
            200: ModelVersionOutputSerializer,
            400: ErrorSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            404: ErrorSerializer,
            409: ErrorSerializer,
        },
        description="200 with the version. 400 without `traffic_percent` or for one outside 0-100; 409 for a "
        "share (above 0) for a version that is not a candidate, or when another candidate already has one "
        "(one A/B test at a time).",
    )
    def patch(self, request: AuthenticatedRequest, name: str, version: str) -> Response:
        model_version = _model_version_or_404(name=name, version=version)
        changes = self.InputSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        updated = registry_services.model_version_set_traffic(
            model_version=model_version, traffic_percent=changes.validated_data["traffic_percent"], user=request.user
        )
        return Response(ModelVersionOutputSerializer(updated).data, headers=form_body_headers(request))


class ModelVersionRollbackApi(APIView):
    """Activate the version that was active before the current one."""

    permission_classes = [CanChangeModelVersions]

    @extend_schema(
        request=None,
        responses={
            200: ModelVersionOutputSerializer,
            401: ErrorSerializer,
            403: ErrorSerializer,
            409: ErrorSerializer,
            503: ErrorSerializer,
        },
        description="200 with the version now active. 409 when there is nothing to roll back to "
        "(the active version was the first one, or none is active).",
    )
    def post(self, request: AuthenticatedRequest) -> Response:
        activated = registry_services.model_version_rollback(user=request.user)
        return Response(ModelVersionOutputSerializer(activated).data)


class ModelActivationListApi(APIView):
    """The latest switches of the active model, newest first."""

    permission_classes = [CanChangeModelVersions]
    throttle_classes = [ReadRateThrottle]

    @extend_schema(
        responses={
            200: ModelActivationOutputSerializer(many=True),
            401: ErrorSerializer,
            403: ErrorSerializer,
            429: ErrorSerializer,
        }
    )
    def get(self, request: Request) -> Response:
        return Response(ModelActivationOutputSerializer(registry_selectors.model_activation_list(), many=True).data)
