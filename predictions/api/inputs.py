"""Request bodies taken as the schema types them.

DRF converts on the way in: ``{"label": 0}`` becomes the label "0" and
``{"traffic_percent": "10"}`` the number 10. The schema says a label is a string and a
share an integer, so a JSON body with another type is a 400, as the schema promises.
A form body (every value a string) is converted as before.
"""

from __future__ import annotations

from typing import Any

from django.http import QueryDict
from rest_framework import serializers

# What a JSON value of each field kind must be (bool is an int to Python: excluded).
_JSON_TYPES: list[tuple[type[serializers.Field[Any, Any, Any, Any]], tuple[type, ...], str]] = [
    (serializers.BooleanField, (bool,), "true or false"),
    (serializers.IntegerField, (int,), "an integer"),
    (serializers.CharField, (str,), "a string"),
]


class JsonInputSerializer(serializers.Serializer[Any]):
    """An input serializer whose fields take from a JSON body only values of their own JSON type."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict) and not isinstance(data, QueryDict):
            errors = {
                name: [f"Expected {expected}."]
                for name, field in self.fields.items()
                if name in data and data[name] is not None
                for kind, types, expected in _JSON_TYPES
                if isinstance(field, kind) and not _of_type(data[name], types)
            }
            if errors:
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


def _of_type(value: Any, types: tuple[type, ...]) -> bool:
    return isinstance(value, types) and (bool in types or not isinstance(value, bool))
