from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from accounts import urls as accounts_urls
from predictions import views as prediction_views
from predictions.api import predictions as prediction_api
from predictions.api import submissions as submission_api
from predictions.api import uploads as upload_api
from predictions.api.dispatch import method_dispatch
from predictions.explanations import api as explanation_api
from predictions.operations import views as observability_views
from predictions.operations.stats import api as stats_api
from predictions.registry import api as registry_api
from predictions.reviews import api as review_api

api_urls = [
    # One view per action; list + submit and poll + delete share a URL each.
    path(
        "predictions/",
        method_dispatch(GET=prediction_api.PredictionListApi, POST=submission_api.PredictionCreateApi),
        name="prediction-list",
    ),
    path("predictions/batch/", submission_api.PredictionBatchCreateApi.as_view(), name="prediction-batch"),
    path("uploads/", upload_api.DirectUploadCreateApi.as_view(), name="upload-list"),
    path("uploads/<str:upload_id>/commit/", upload_api.DirectUploadCommitApi.as_view(), name="upload-commit"),
    path(
        "predictions/<str:prediction_id>/",
        method_dispatch(GET=prediction_api.PredictionDetailApi, DELETE=prediction_api.PredictionDeleteApi),
        name="prediction-detail",
    ),
    path(
        "predictions/<str:prediction_id>/image/", prediction_api.PredictionImageApi.as_view(), name="prediction-image"
    ),
    path(
        "predictions/<str:prediction_id>/retry/", prediction_api.PredictionRetryApi.as_view(), name="prediction-retry"
    ),
    path(
        "predictions/<str:prediction_id>/explanation/",
        method_dispatch(
            GET=explanation_api.PredictionExplanationApi, POST=explanation_api.PredictionExplanationRequestApi
        ),
        name="prediction-explanation",
    ),
    path(
        "predictions/<str:prediction_id>/correction/",
        method_dispatch(POST=review_api.PredictionCorrectionApi, DELETE=review_api.PredictionCorrectionWithdrawApi),
        name="prediction-correction",
    ),
    path(
        "predictions/<str:prediction_id>/confirmation/",
        method_dispatch(POST=review_api.PredictionConfirmationApi, DELETE=review_api.PredictionConfirmationWithdrawApi),
        name="prediction-confirmation",
    ),
    path("models/", registry_api.ModelVersionListApi.as_view(), name="model-list"),
    path("models/rollback/", registry_api.ModelVersionRollbackApi.as_view(), name="model-rollback"),
    path("models/activations/", registry_api.ModelActivationListApi.as_view(), name="model-activations"),
    path("models/<str:name>/<str:version>/", registry_api.ModelVersionUpdateApi.as_view(), name="model-detail"),
    path(
        "models/<str:name>/<str:version>/activate/",
        registry_api.ModelVersionActivateApi.as_view(),
        name="model-activate",
    ),
    path("stats/", stats_api.StatsApi.as_view(), name="stats"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from the sidecar's local files, its start-up script and page styles files of
    # their own (no inline script or style: the Content-Security-Policy allows none). No ReDoc: it loads fonts from
    # other hosts, and the MkDocs site renders the same schema (docs/reference/api.md).
    path(
        "docs/",
        SpectacularSwaggerSplitView.as_view(url_name="api:schema", template_name="api/swagger_ui.html"),
        name="docs",
    ),
]

urlpatterns = [
    path("favicon.ico", prediction_views.favicon, name="favicon"),
    path(
        "admin/predictions/image/<str:prediction_id>/",
        prediction_views.admin_image,
        name="admin-prediction-image",
    ),
    path("admin/", admin.site.urls),
    path("accounts/", include(accounts_urls.auth_urlpatterns)),
    path("accounts/", include("accounts.urls")),
    path("api/v1/", include((api_urls, "api"))),
    path("stats/", observability_views.stats_page, name="stats"),
    path("models/", include("predictions.registry.urls")),
    path("reviews/", include("predictions.reviews.urls")),
    path("health/live", observability_views.health_live, name="health-live"),
    path("health/ready", observability_views.health_ready, name="health-ready"),
    path("metrics", observability_views.metrics_view, name="metrics"),
    path("", include("predictions.urls")),
]
