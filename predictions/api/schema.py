"""OpenAPI schema generation that knows ``method_dispatch``: each operation of a
dispatched URL is documented from its own view (serializers, parameters, responses).

Wired with ``SPECTACULAR_SETTINGS["DEFAULT_GENERATOR_CLASS"]``; ``add_links`` (a
postprocessing hook) documents which answer gives the ids of which next request.
"""

from __future__ import annotations

from typing import Any

from django.urls import URLPattern
from drf_spectacular.generators import EndpointEnumerator, SchemaGenerator


class MethodDispatchEndpointEnumerator(EndpointEnumerator):
    """drf-spectacular's enumerator, expanding a ``method_dispatch`` URL into one endpoint
    per method, each with that method's view as its callback."""

    def _get_api_endpoints(self, patterns: Any, prefix: str) -> list[tuple[str, str, str, Any]]:
        if patterns is None:
            patterns = self.patterns
        endpoints: list[tuple[str, str, str, Any]] = []
        for pattern in patterns:
            views_by_method = getattr(getattr(pattern, "callback", None), "views_by_method", None)
            if not isinstance(pattern, URLPattern) or views_by_method is None:
                # Plain views and included URL confs (which come back here, pattern by pattern).
                endpoints.extend(super()._get_api_endpoints([pattern], prefix))
                continue
            path_regex = prefix + str(pattern.pattern)
            path = self.get_path_from_regex(path_regex)
            for method, view in views_by_method.items():
                if self.should_include_endpoint(path, view) and method in self.get_allowed_methods(view):
                    endpoints.append((path, path_regex, method, view))
        return endpoints


class MethodDispatchSchemaGenerator(SchemaGenerator):
    endpoint_inspector_cls = MethodDispatchEndpointEnumerator


# Which answer gives the parameters of which next request: (source operation, its
# statuses, the operations it opens, where each parameter comes from). None as the
# operations: every operation whose one path parameter is prediction_id. Documented as
# OpenAPI links, so a reader of the reference, a client generator and a stateful tester
# (schemathesis) can follow one answer to the next request.
_ANY_PREDICTION_OPERATION = None
_LINKS: list[tuple[str, tuple[str, ...], tuple[str, ...] | None, dict[str, str]]] = [
    ("predictions_create", ("201", "202"), _ANY_PREDICTION_OPERATION, {"prediction_id": "$response.body#/id"}),
    ("predictions_retry_create", ("202",), _ANY_PREDICTION_OPERATION, {"prediction_id": "$response.body#/id"}),
    (
        "predictions_correction_create",
        ("200",),
        ("predictions_correction_destroy",),
        {"prediction_id": "$response.body#/prediction"},
    ),
    (
        "predictions_confirmation_create",
        ("200",),
        ("predictions_confirmation_destroy",),
        {"prediction_id": "$response.body#/prediction"},
    ),
    (
        "predictions_explanation_create",
        ("200", "202"),
        ("predictions_explanation_retrieve",),
        {"prediction_id": "$request.path.prediction_id", "class_id": "$response.body#/class_id"},
    ),
    (
        "models_list",
        ("200",),
        ("models_partial_update", "models_activate_create"),
        {"name": "$response.body#/0/name", "version": "$response.body#/0/version"},
    ),
]


def add_links(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular postprocessing hook (``POSTPROCESSING_HOOKS``): add the links of
    ``_LINKS`` to the schema, each named by the operationId it leads to."""
    operations = {
        operation["operationId"]: operation
        for path_item in result.get("paths", {}).values()
        for operation in path_item.values()
        if isinstance(operation, dict) and "operationId" in operation
    }
    by_prediction_id = [
        operation_id
        for operation_id, operation in operations.items()
        if [p["name"] for p in operation.get("parameters", []) if p.get("in") == "path"] == ["prediction_id"]
    ]
    for source_id, statuses, targets, parameters in _LINKS:
        for status_code in statuses:
            links = operations[source_id]["responses"][status_code].setdefault("links", {})
            for target_id in by_prediction_id if targets is _ANY_PREDICTION_OPERATION else targets:
                links[target_id] = {"operationId": target_id, "parameters": parameters}
    return result
