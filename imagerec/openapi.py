"""How the OpenAPI schema is generated (drf-spectacular's ``SPECTACULAR_SETTINGS``): fixed
choices, none read from the environment, kept beside the settings that use them. The
committed schema (docs/reference/openapi.yaml) and the generated clients depend on them."""

from __future__ import annotations

from typing import Any

OPENAPI_SETTINGS: dict[str, Any] = {
    "TITLE": "imagerec API",
    "DESCRIPTION": "Submit images for classification and poll their results.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    # No badge from the online validator (Swagger UI's default asks validator.swagger.io).
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # A PATCH body is documented as its serializer says, not as all-optional: the one PATCH
    # (a model version's traffic_percent) requires what it changes.
    "COMPONENT_SPLIT_PATCH": False,
    # Enum component names are type names in generated clients: fixed here, not left to
    # drf-spectacular's collision resolution (which renames them when a serializer is added).
    "ENUM_NAME_OVERRIDES": {
        "PredictionOutputStatusEnum": "predictions.models.PredictionStatus",
        "ModelVersionOutputStatusEnum": "predictions.models.ModelVersionStatus",
    },
    # Documents each view behind a predictions.api.dispatch.method_dispatch URL as its own operation.
    "DEFAULT_GENERATOR_CLASS": "predictions.api.schema.MethodDispatchSchemaGenerator",
    # The default hook (enum components), then OpenAPI links from each answer to the
    # operations its ids open (predictions.api.schema.add_links).
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums", "predictions.api.schema.add_links"],
}
