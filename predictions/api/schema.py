"""OpenAPI schema generation that knows ``method_dispatch``: each operation of a
dispatched URL is documented from its own view (serializers, parameters, responses).

Wired with ``SPECTACULAR_SETTINGS["DEFAULT_GENERATOR_CLASS"]``.
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
