"""System checks (``manage.py check``, run by ``migrate``, ``runserver`` and the
Celery worker at start): settings that would break a guarantee refuse to start."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.utils.module_loading import import_string


def reconcile_after_time_limit_check(app_configs: Any = None, **_: Any) -> list[CheckMessage]:
    """A prediction still ``running`` after ``RECONCILE_AFTER_SECONDS`` is taken to have
    lost its worker and is claimed again; that is only true once Celery has killed the
    task, ``CELERY_TASK_TIME_LIMIT`` seconds after it started."""
    reconcile_after = settings.RECONCILE_AFTER_SECONDS
    time_limit = settings.CELERY_TASK_TIME_LIMIT
    if time_limit and reconcile_after > time_limit:
        return []
    limit = f"{time_limit:g} s" if time_limit else "not set (no limit)"
    return [
        Error(
            f"RECONCILE_AFTER_SECONDS ({reconcile_after} s) must be greater than the hard task time limit "
            f"CELERY_TASK_TIME_LIMIT ({limit}): a prediction still running after RECONCILE_AFTER_SECONDS "
            "would be claimed and classified again while its first worker may still be working on it.",
            hint="Raise RECONCILE_AFTER_SECONDS above CELERY_TASK_TIME_LIMIT, or lower CELERY_TASK_TIME_LIMIT "
            "(and CELERY_TASK_SOFT_TIME_LIMIT below it).",
            id="predictions.E001",
        )
    ]


def security_middleware_check(app_configs: Any = None, **_: Any) -> list[CheckMessage]:
    """Django's own security.W001 / W002 look for its class paths in ``MIDDLEWARE``; the
    site runs subclasses of them (imagerec/middleware.py: the same hooks, run in the event
    loop), so those two are silenced and this check asks for the classes themselves."""
    loaded = [import_string(path) for path in settings.MIDDLEWARE]
    return [
        Warning(
            f"No {required.__name__} (or a subclass) in MIDDLEWARE: its headers are not sent.",
            hint=f"Add {required.__module__}.{required.__name__} or imagerec.middleware.{required.__name__}.",
            id=f"predictions.W00{index}",
        )
        for index, required in enumerate((SecurityMiddleware, XFrameOptionsMiddleware), start=1)
        if not any(isinstance(cls, type) and issubclass(cls, required) for cls in loaded)
    ]
