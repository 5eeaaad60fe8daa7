"""The confirmation step of a model switch, shared by the Models page and the admin.

A switch (activate, roll back, a candidate's share of traffic) changes what every user's
new predictions run with, so it is never one click: the first post shows a page with
the current and the new version side by side (``model_version_figures``); only a post
carrying ``CONFIRM_FIELD`` and the state that page showed (``active_shown``) applies it,
through the registry services. When the active version changed in between, the page is
shown again with the new state instead.
"""

from __future__ import annotations

from django.http import HttpRequest

from predictions.models import ModelVersion

# Set by the confirmation page's button: a switch is applied only in a post that carries it.
CONFIRM_FIELD = "confirmed_switch"
# The hidden field naming the version that was active when the confirmation page was shown.
ACTIVE_SHOWN_FIELD = "active_shown"
# The live figures on the confirmation pages: every user's predictions of these last days.
WINDOW_DAYS = 30


def switch_confirmed(request: HttpRequest) -> bool:
    """The post came from a confirmation page's button."""
    return request.method == "POST" and request.POST.get(CONFIRM_FIELD) == "yes"


def active_shown_value(active: ModelVersion | None) -> str:
    """What a confirmation page records of the active version (its id, or empty for none)."""
    return str(active.pk) if active is not None else ""


def active_unchanged(request: HttpRequest, active: ModelVersion | None) -> bool:
    """The version active now is the one the confirmation page showed."""
    return request.POST.get(ACTIVE_SHOWN_FIELD) == active_shown_value(active)
