"""REST API v1: one view per action with small nested serializers, one error shape.

- ``predictions``: list, submit, poll, delete, retry, correction, confirmation (and
  withdrawing either) and image views.
- ``model_versions``: list the models; activate one, roll back, a candidate's share of
  traffic (A/B test), the history of switches.
- ``explanations``: the Grad-CAM overlay of a prediction for one of its top-k classes.
- ``stats``: the aggregates.
- ``serializers``: the prediction output the list, the poll and a waiting submit share.
- ``errors``: the error body ``{"error": {"code", "message", "field"}}`` and the exception handler.
- ``throttles``: per-user submit and read rates.
- ``dispatch`` + ``schema``: several views behind one URL, routed by method, each
  documented as its own operation in the OpenAPI schema.

The URLs are in ``imagerec/urls.py`` (namespace ``api``).
"""

from predictions.explanations.api import PredictionExplanationApi
from predictions.registry.api import (
    ModelActivationListApi,
    ModelVersionActivateApi,
    ModelVersionListApi,
    ModelVersionRollbackApi,
    ModelVersionUpdateApi,
)

from .dispatch import method_dispatch
from .predictions import (
    PredictionConfirmationApi,
    PredictionConfirmationWithdrawApi,
    PredictionCorrectionApi,
    PredictionCorrectionWithdrawApi,
    PredictionCreateApi,
    PredictionDeleteApi,
    PredictionDetailApi,
    PredictionImageApi,
    PredictionListApi,
    PredictionRetryApi,
)
from .stats import StatsApi
from .throttles import ReadRateThrottle, SubmitRateThrottle

__all__ = [
    "ModelActivationListApi",
    "ModelVersionActivateApi",
    "ModelVersionListApi",
    "ModelVersionRollbackApi",
    "ModelVersionUpdateApi",
    "PredictionConfirmationApi",
    "PredictionConfirmationWithdrawApi",
    "PredictionCorrectionApi",
    "PredictionCorrectionWithdrawApi",
    "PredictionCreateApi",
    "PredictionDeleteApi",
    "PredictionDetailApi",
    "PredictionExplanationApi",
    "PredictionImageApi",
    "PredictionListApi",
    "PredictionRetryApi",
    "ReadRateThrottle",
    "StatsApi",
    "SubmitRateThrottle",
    "method_dispatch",
]
