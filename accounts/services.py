"""Every write about accounts: API tokens (replaced with the password too) and the admin account.

Failed logins are not counted here: django-axes does it inside every call of
``django.contrib.auth.authenticate`` (the login pages, the password page's old password);
see ``AXES_*`` in ``imagerec/settings.py``. Lifting a lockout early is here.
"""

from __future__ import annotations

import logging
from datetime import datetime

from axes.models import AccessAttempt
from axes.utils import reset as axes_reset
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token

logger = logging.getLogger(__name__)

# What `make run` logs in with on a laptop; never accepted with DEBUG off.
DEVELOPMENT_SUPERUSER_PASSWORD = "admin"  # noqa: S105


class SuperuserPasswordRefused(Exception):
    """The admin account would be created with no password or the development one
    while DEBUG is off."""


@transaction.atomic
def token_rotate(*, user: User) -> str:
    """Replace the user's API token with a new one and return its key."""
    Token.objects.filter(user=user).delete()
    return str(Token.objects.create(user=user).key)


@transaction.atomic
def token_rotate_after_password_change(*, user: User) -> bool:
    """Replace the user's API token, if they have one, after their password changed
    (``accounts.passwords.ApiTokenRotation``); returns whether there was one."""
    if not Token.objects.filter(user=user).exists():
        return False
    token_rotate(user=user)
    return True


def lockout_end(*, attempt: AccessAttempt) -> datetime | None:
    """When the lockout of ``attempt``'s username and address ends (its last failure plus
    ``LOGIN_FAILURE_WINDOW_SECONDS``); ``None`` when it is not locked out (now)."""
    if attempt.failures_since_start < settings.AXES_FAILURE_LIMIT:
        return None
    end: datetime = attempt.attempt_time + settings.AXES_COOLOFF_TIME
    return end if end > timezone.now() else None


def lockout_lift(*, username: str, ip_address: str) -> int:
    """Forget the failed logins of ``username`` from ``ip_address``: a lockout of that pair
    ends now (other pairs keep theirs). Returns how many attempt rows were removed."""
    removed: int = axes_reset(ip=ip_address, username=username)
    logger.info("Lockout of %r from %s lifted (%d attempt rows)", username, ip_address, removed)
    return removed


def superuser_ensure(*, username: str, email: str, password: str) -> bool:
    """Create the superuser ``username`` unless an account of that name exists; returns
    whether it was created. An existing account is left as it is (password included).

    With ``DEBUG`` off, raises ``SuperuserPasswordRefused`` rather than create it with an
    empty password or ``DEVELOPMENT_SUPERUSER_PASSWORD``.
    """
    users = get_user_model()
    if users.objects.filter(username=username).exists():
        return False
    if not settings.DEBUG and password in ("", DEVELOPMENT_SUPERUSER_PASSWORD):
        reason = "no password" if not password else f"the development password {password!r}"
        raise SuperuserPasswordRefused(
            f"Refusing to create the admin account '{username}' with DEBUG=false and {reason}"
        )
    users.objects.create_superuser(username=username, email=email, password=password)
    return True
