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
from typing import Any

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


env = Env()
