"""Reading settings from the environment: django-environ, made strict.

- ``NAME_FILE=/run/secrets/name`` is read instead of ``NAME`` (Docker secrets), for
  every variable; the file's trailing newline is dropped.
- A malformed value refuses to start and names the variable
  (``MAX_ATTEMPTS must be a whole number, not 'abc'``) instead of a bare ``ValueError``.
- Booleans accept true/false/1/0/yes/no/on/off only: django-environ alone reads any
  typo (``DEBUG=ture``) as false.
- An empty value means "use the default", as an unset one does; a value is taken as
  it is (django-environ would read ``$NAME`` as a reference to another variable).
"""

from __future__ import annotations

import math
import re
import zoneinfo
from collections.abc import Iterable
from typing import Any

import dj_database_url
import environ
from django.core.exceptions import ImproperlyConfigured
from environ.fileaware_mapping import FileAwareMapping

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_KINDS: dict[Any, str] = {bool: "true or false", int: "a whole number", float: "a number"}


class _SecretFileMapping(FileAwareMapping):  # type: ignore[misc]  # django-environ ships no type hints
    """``os.environ`` plus ``*_FILE`` variables, with errors that name the variable."""

    def __getitem__(self, key: str) -> str:
        path = self.env.get(f"{key}_FILE")
        if not path:
            return str(self.env[key])
        try:
            with open(path, encoding="utf-8") as secret:
                return secret.read().rstrip("\r\n")
        except OSError as error:
            raise ImproperlyConfigured(f"{key}_FILE names {path!r}, which cannot be read: {error.strerror}") from None


class Env(environ.Env):  # type: ignore[misc]  # django-environ ships no type hints
    """``environ.FileAwareEnv`` that parses strictly and names the variable in errors."""

    def __init__(self) -> None:
        super().__init__()
        self.ENVIRON = _SecretFileMapping(cache=False)

    def get_value(
        self, var: str, cast: Any = None, default: Any = environ.Env.NOTSET, parse_default: bool = False
    ) -> Any:
        # Not django-environ's own: it would also read a value starting with "$" as the
        # name of another variable, which breaks a secret that happens to start with one.
        try:
            raw = self.ENVIRON[var]
        except KeyError:
            if default is environ.Env.NOTSET:
                raise ImproperlyConfigured(f"Set the {var} environment variable") from None
            return default
        if raw.strip() == "" and default is not environ.Env.NOTSET:
            return default
        try:
            return self.parse_value(raw, cast)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(f"{var} must be {_KINDS.get(cast, 'valid')}, not {raw!r}") from None

    @classmethod
    def parse_value(cls, value: Any, cast: Any) -> Any:
        if isinstance(value, str):
            if cast is bool:
                word = value.strip().lower()
                if word not in _TRUE + _FALSE:
                    raise ValueError(value)
                return word in _TRUE
            if cast is int:
                return int(value.strip())
            if cast is float:
                number = float(value.strip())
                if not math.isfinite(number):
                    raise ValueError(value)
                return number
        return super().parse_value(value, cast)

    def choice(self, var: str, *, default: str, choices: Iterable[str]) -> str:
        """One of ``choices`` (lower case; the value is read case-insensitively), else
        refuse, naming them."""
        value: str = self.str(var, default=default).strip().lower()
        allowed = list(choices)
        if value not in allowed:
            raise ImproperlyConfigured(f"{var} must be one of {', '.join(allowed)}, not {value!r}")
        return value

    def rate(self, var: str, *, default: str) -> str:
        """A request rate as Django REST framework reads it: ``120/min``, ``5/s``, ``1000/hour``."""
        value: str = self.str(var, default=default).strip()
        if not _RATE.fullmatch(value):
            raise ImproperlyConfigured(f"{var} must be a rate such as 120/min or 10/s, not {value!r}")
        return value

    def time_zone(self, var: str, *, default: str) -> str:
        """An IANA time zone name (``Europe/Paris``)."""
        value: str = self.str(var, default=default).strip()
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ImproperlyConfigured(
                f"{var} must be a time zone name such as UTC or Europe/Paris, not {value!r}"
            ) from None
        return value

    def database(self, var: str, *, default: str, **options: Any) -> dict[str, Any]:
        """Django's DATABASES entry from a URL (dj-database-url). The error names the
        variable and the scheme, never the URL itself (it may hold a password)."""
        value: str = self.str(var, default=default).strip()
        try:
            return dict(dj_database_url.parse(value, **options))
        except (ValueError, dj_database_url.UnknownSchemeError):
            scheme = value.split("://", 1)[0] if "://" in value else "(none)"
            raise ImproperlyConfigured(
                f"{var} must be a database URL such as postgres://user:password@host:5432/name or "
                f"sqlite:///path/db.sqlite3; scheme {scheme!r} is not one Django can use"
            ) from None


_RATE = re.compile(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)")

env = Env()
