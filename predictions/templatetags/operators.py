"""Who sees the operator pages' links (``predictions.access``): the nav asks these."""

from __future__ import annotations

from django import template
from django.contrib.auth.models import AnonymousUser, User

from predictions import access
from predictions.operations.stats.cards import percent_text

register = template.Library()


@register.filter
def may_switch_models(user: User | AnonymousUser | None) -> bool:
    """The Models page: ``predictions.change_modelversion``."""
    return access.can_change_model_versions(user)


@register.filter
def may_read_reviews(user: User | AnonymousUser | None) -> bool:
    """The Reviews page: ``predictions.view_prediction`` (every user's predictions)."""
    return access.can_view_all_predictions(user)


@register.filter
def share(value: float | None) -> str:
    """A fraction as a percentage, whole when it is whole: 1.0 -> "100 %", 0.912 -> "91.2 %"."""
    return "" if value is None else percent_text(value)


@register.filter
def div_share(part: int | None, whole: int | None) -> str:
    """``part`` of ``whole`` as a percentage ("0 %" for none of it); empty without a whole."""
    if not whole:
        return ""
    return percent_text((part or 0) / whole)


@register.filter
def duration(milliseconds: float | None) -> str:
    """A time in words a person reads at a glance: "40 ms", "19.4 s"; empty for none."""
    if milliseconds is None:
        return ""
    if milliseconds < 1000:
        return f"{milliseconds:.0f} ms"
    return f"{milliseconds / 1000:.1f} s"
