"""What the admin pages of every room share: JSON shown as a table, the signed-in user."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join


def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as ("a.b.c", "value") rows; lists of plain values joined by commas."""
    if isinstance(value, dict):
        rows: list[tuple[str, str]] = []
        for key, item in value.items():
            rows += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return rows
    if isinstance(value, list) and all(not isinstance(item, dict | list) for item in value):
        text = ", ".join(str(item) for item in value[:50]) + (f", … ({len(value)} in all)" if len(value) > 50 else "")
        return [(prefix, text)]
    if isinstance(value, list):
        return [row for index, item in enumerate(value) for row in flatten(item, f"{prefix}[{index}]")]
    return [(prefix, "" if value is None else str(value))]


def key_value_table(value: Any) -> str:
    """JSON (model metrics, metadata) as a readable two-column table instead of raw JSON."""
    rows = flatten(value or {})
    if not rows:
        return "-"
    body = format_html_join("", '<tr><th scope="row">{}</th><td>{}</td></tr>', rows)
    return format_html("<table>{}</table>", body)


def request_user(request: HttpRequest) -> User | None:
    return request.user if isinstance(request.user, User) else None
