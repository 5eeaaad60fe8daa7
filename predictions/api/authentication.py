"""API tokens, with what a token names kept in the web process while changes are heard.

DRF's ``TokenAuthentication`` reads the token and its user on every API request (one
query, ~0.7 ms of CPU: ``make bench-frontdoor``). ``KeptTokenAuthentication`` answers
the same, keeping each key's token and user fields (``predictions.announced``), but
only while this process hears change announcements (Redis, the events listener): with
none heard (no Redis, or Redis down) every request reads them, as DRF does. What is
kept is dropped, so a rotated or deleted token, or a deactivated user, stops working:

- in this process at once (and again on commit) when a token or a user is saved or
  deleted (``post_save`` / ``post_delete``: a rotation, the rotation after a password
  change, a deactivation, a deletion);
- in every other web process when that change's announcement arrives, sent on commit.

A bulk ``QuerySet.update()`` of users or tokens sends no signal: call
``tokens_changed()`` after one. Each request gets its own ``User`` instance, built from
the kept fields: permission caches live on the instance, so permissions are read again.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token

from ..announced import AnnouncedValue

_USER_FIELDS = [field.attname for field in User._meta.concrete_fields]
_TOKEN_FIELDS = [field.attname for field in Token._meta.concrete_fields]
_MAX_KEYS = 10_000  # a flood of distinct keys cannot grow it without bound
_Kept = tuple[tuple[Any, ...], tuple[Any, ...]]  # the token's values, its user's values

# Key -> what a read of the token and its user gave; kept only while changes are heard.
_known: AnnouncedValue[dict[str, _Kept]] = AnnouncedValue(topic="tokens", load=dict, unheard_seconds=0.0)


def tokens_changed(**_: object) -> None:
    """A token or a user changed: every process reads tokens again (``announced``)."""
    _known.changed()


def tokens_forget() -> None:
    """Drop what this process keeps (a test's database is rolled back)."""
    _known.forget()


def token_user(key: str) -> tuple[User, Token]:
    """The token of ``key`` and its user, each a new instance; raises ``Token.DoesNotExist``."""
    known = _known.get()
    kept = known.get(key)
    if kept is None:
        token = Token.objects.select_related("user").get(key=key)
        kept = (
            tuple(getattr(token, name) for name in _TOKEN_FIELDS),
            tuple(getattr(token.user, name) for name in _USER_FIELDS),
        )
        if len(known) >= _MAX_KEYS:
            known.clear()
        known[key] = kept
    user = User.from_db("default", _USER_FIELDS, kept[1])
    token = Token.from_db("default", _TOKEN_FIELDS, kept[0])
    token.user = user
    return user, token


class KeptTokenAuthentication(TokenAuthentication):
    """``TokenAuthentication`` (same header, same errors) through ``token_user``."""

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        try:
            user, token = token_user(key)
        except Token.DoesNotExist as error:
            raise exceptions.AuthenticationFailed(_("Invalid token.")) from error
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, token
