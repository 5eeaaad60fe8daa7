"""Who may see what: one policy, decided by Django permissions, never by ``is_staff``.

- Everyone signed in sees, changes and deletes only their own predictions.
- ``predictions.view_prediction`` (a superuser has it; grant it to a group of
  operators in the admin) reads every user's predictions: their images in the admin,
  the all-users stats page and API, and ``/metrics``.
- ``is_staff`` only lets an account into the admin site; what it shows there follows
  the account's permissions, so a staff account without them sees nothing.

Pages, the API, the stats, the admin and the metrics endpoint all ask this module.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User

VIEW_ALL_PREDICTIONS = "predictions.view_prediction"


def can_view_all_predictions(user: User | AnonymousUser | None) -> bool:
    """True for an active account holding ``predictions.view_prediction``."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return bool(user.has_perm(VIEW_ALL_PREDICTIONS))
