from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from accounts import urls as accounts_urls
from predictions import api
from predictions import views as prediction_views
from predictions.operations import views as observability_views

api_urls = [
    # One view per action; list + submit and poll + delete share a URL each.
    path(
        "predictions/",
        api.method_dispatch(GET=api.PredictionListApi, POST=api.PredictionCreateApi),
        name="prediction-list",
    ),
    path(
        "predictions/<str:prediction_id>/",
        api.method_dispatch(GET=api.PredictionDetailApi, DELETE=api.PredictionDeleteApi),
        name="prediction-detail",
    ),
    path("predictions/<str:prediction_id>/image/", api.PredictionImageApi.as_view(), name="prediction-image"),
    path("predictions/<str:prediction_id>/retry/", api.PredictionRetryApi.as_view(), name="prediction-retry"),
    path(
        "predictions/<str:prediction_id>/explanation/",
        api.PredictionExplanationApi.as_view(),
        name="prediction-explanation",
    ),
    path(
        "predictions/<str:prediction_id>/correction/",
        api.method_dispatch(POST=api.PredictionCorrectionApi, DELETE=api.PredictionCorrectionWithdrawApi),
        name="prediction-correction",
    ),
    path(
        "predictions/<str:prediction_id>/confirmation/",
        api.method_dispatch(POST=api.PredictionConfirmationApi, DELETE=api.PredictionConfirmationWithdrawApi),
        name="prediction-confirmation",
    ),
    path("models/", api.ModelVersionListApi.as_view(), name="model-list"),
    path("models/rollback/", api.ModelVersionRollbackApi.as_view(), name="model-rollback"),
    path("models/activations/", api.ModelActivationListApi.as_view(), name="model-activations"),
    path("models/<str:name>/<str:version>/", api.ModelVersionUpdateApi.as_view(), name="model-detail"),
    path("models/<str:name>/<str:version>/activate/", api.ModelVersionActivateApi.as_view(), name="model-activate"),
    path("stats/", api.StatsApi.as_view(), name="stats"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
    path("redoc/", SpectacularRedocView.as_view(url_name="api:schema"), name="redoc"),
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
    path("health/live", observability_views.health_live, name="health-live"),
    path("health/ready", observability_views.health_ready, name="health-ready"),
    path("metrics", observability_views.metrics_view, name="metrics"),
    path("", include("predictions.urls")),
]
