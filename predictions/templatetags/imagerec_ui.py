"""Template helpers for the pages: how a label, a time and a chart are shown to people.

Display only: stored labels, the API and the CSV keep the model's class names as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from django import template
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString

register = template.Library()

# The ImageNet class list writes dog breeds in Title Case ("Golden Retriever", "Yorkshire
# Terrier") and everything else in lower case ("garbage truck"). These generic nouns are
# lower-cased after the first word, so breeds read like the rest ("Golden retriever");
# proper names ("Shih Tzu", "Egyptian Mau", "St. Bernard") keep their capitals. The first
# letter of every label is capitalised by CSS (``.label::first-letter``), so the text
# itself stays the model's (copy and paste gives what the API returns).
_GENERIC_NOUNS = frozenset({
    "Terrier", "Spaniel", "Retriever", "Coonhound", "Hound", "Schnauzer", "Setter", "Dog", "Poodle", "Springer",
    "Sheepdog", "Mountain", "Corgi", "Ridgeback", "Wolfhound", "Greyhound", "Elkhound", "Deerhound", "Bull", "Fox",
    "Pointer", "Water", "Collie", "Shepherd", "Pinscher", "Mastiff", "Bulldog", "Husky", "Malamute", "Silky",
    "Wheaten", "Shorthaired", "Blue", "White", "Kelpie",
})  # fmt: skip


def label_text(label: str) -> str:
    """The label as the pages show it: one casing rule for every model's classes."""
    words = label.split(" ")
    return " ".join([words[0], *(w.lower() if w in _GENERIC_NOUNS else w for w in words[1:])])


@register.filter
def display_label(label: str | None) -> str:
    return label_text(label) if label else ""


@register.filter
def local_time(moment: datetime | None, style: str = "datetime") -> SafeString | str:
    """A ``<time>`` element: the server renders the time in the active time zone (the
    browser's, from the ``tz`` cookie, else the server's) and names that zone."""
    if moment is None:
        return ""
    local = timezone.localtime(moment)
    shown = local.strftime("%Y-%m-%d") if style == "date" else local.strftime("%Y-%m-%d %H:%M")
    zone = timezone.get_current_timezone_name()
    return format_html('<time datetime="{}" title="{} ({})">{}</time>', moment.isoformat(), shown, zone, shown)


@register.filter
def percent(value: float | None, digits: int = 0) -> str:
    """0.8734 -> "87 %" (or "87.3 %" with one digit); empty for no value."""
    if value is None:
        return ""
    return f"{value * 100:.{digits}f} %"


@register.filter
def max_value(bars: Iterable[Mapping[str, Any]]) -> int:
    """The largest ``value`` of the chart bars (the top of the y axis)."""
    return max((int(bar["value"]) for bar in bars), default=0)


@register.filter
def candidates(top_predictions: Iterable[Mapping[str, Any]] | None, count: int = 3) -> list[Mapping[str, Any]]:
    """The classes a "Not sure" line names: the first ``count`` of the top-k whose score
    shows as at least 1 % (a "maybe" never offers a 0 % candidate)."""
    return [item for item in top_predictions or [] if float(item.get("score", 0)) >= 0.005][:count]
