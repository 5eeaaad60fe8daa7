"""Who may see what: one policy, decided by Django permissions, never by ``is_staff``.

- Everyone signed in sees, changes and deletes only their own predictions.
- ``predictions.view_prediction`` (a superuser has it; grant it to a group of
  operators in the admin) reads every user's predictions: their images in the admin,
  the all-users stats page and API, and ``/metrics``.
- ``predictions.change_modelversion`` switches the active model version (activate,
  roll back) in the admin and the API; ``predictions.change_prediction`` retries anyone's
  failed prediction from the admin (owners retry their own without it);
  ``predictions.add_reprocessjob`` re-runs finished predictions with the active model
  (admin: Reprocess jobs; start, pause, resume, cancel).
- ``is_staff`` only lets an account into the admin site; what it shows there follows
  the account's permissions, so a staff account without them sees nothing.

Pages, the API, the stats, the admin and the metrics endpoint all ask this module.
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User

VIEW_ALL_PREDICTIONS = "predictions.view_prediction"
CHANGE_MODEL_VERSIONS = "predictions.change_modelversion"
RETRY_ANY_PREDICTION = "predictions.change_prediction"
REPROCESS_PREDICTIONS = "predictions.add_reprocessjob"


def _holds(user: User | AnonymousUser | None, permission: str) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    return bool(user.has_perm(permission))


def can_view_all_predictions(user: User | AnonymousUser | None) -> bool:
    """True for an active account holding ``predictions.view_prediction``."""
    return _holds(user, VIEW_ALL_PREDICTIONS)


def can_change_model_versions(user: User | AnonymousUser | None) -> bool:
    """True for an active account holding ``predictions.change_modelversion``: it may
    activate a model version or roll back to the previous one."""
    return _holds(user, CHANGE_MODEL_VERSIONS)


def can_retry_any_prediction(user: User | AnonymousUser | None) -> bool:
    """True for an active account holding ``predictions.change_prediction``: it may
    retry any user's failed prediction (from the admin)."""
    return _holds(user, RETRY_ANY_PREDICTION)


def can_reprocess_predictions(user: User | AnonymousUser | None) -> bool:
    """True for an active account holding ``predictions.add_reprocessjob``: it may start,
    pause, resume and cancel jobs that re-run every user's finished predictions."""
    return _holds(user, REPROCESS_PREDICTIONS)
