"""Every write about accounts: API tokens and the admin account.

Failed logins are not counted here: django-axes does it inside every call of
``django.contrib.auth.authenticate`` (the login page, ``/admin/login/``); see
``AXES_*`` in ``imagerec/settings.py``.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import User
from django.db import transaction
from rest_framework.authtoken.models import Token

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
