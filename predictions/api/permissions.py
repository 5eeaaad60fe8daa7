"""Who may call what, as DRF permission classes over the one policy (``predictions.access``).

Every API view needs a signed-in client (``IsAuthenticated``, the default); these add the
Django permission an action needs. Pages ask ``predictions.access`` directly.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request

from predictions import access


class CanChangeModelVersions(IsAuthenticated):
    """Activating a model version, rolling back, a candidate's share of traffic and the
    history of switches: ``predictions.change_modelversion``."""

    message = "Switching model versions needs the permission predictions.change_modelversion."

    def has_permission(self, request: Request, view: Any) -> bool:
        return super().has_permission(request, view) and access.can_change_model_versions(request.user)
