"""System checks refuse settings that would break a guarantee."""

from __future__ import annotations

import pytest
from django.core.checks import run_checks
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from pytest_django import Settings


def _errors() -> list[str | None]:
    return [message.id for message in run_checks() if message.is_serious()]


@pytest.mark.parametrize("reconcile_after", [180, 60])
def test_reconciling_within_the_task_time_limit_is_refused(settings: Settings, reconcile_after: int) -> None:
    """A prediction still running when RECONCILE_AFTER_SECONDS passes would be claimed
    again while its first worker may still be working on it."""
    settings.CELERY_TASK_TIME_LIMIT = 180
    settings.RECONCILE_AFTER_SECONDS = reconcile_after

    assert "predictions.E001" in _errors()
    with pytest.raises(SystemCheckError, match=r"RECONCILE_AFTER_SECONDS \(\d+ s\) must be greater than"):
        call_command("check")


def test_no_hard_time_limit_is_refused_too(settings: Settings) -> None:
    settings.CELERY_TASK_TIME_LIMIT = None

    with pytest.raises(SystemCheckError, match=r"CELERY_TASK_TIME_LIMIT \(not set"):
        call_command("check")


def test_the_defaults_and_the_test_workers_settings_pass(settings: Settings) -> None:
    assert "predictions.E001" not in _errors()  # 300 s after a 180 s hard limit

    # What tests/conftest.py's celery_worker and tests/chaos give their workers.
    for reconcile_after, hard, soft in ((30, 25, 20), (8, 7, 6)):
        settings.RECONCILE_AFTER_SECONDS = reconcile_after
        settings.CELERY_TASK_TIME_LIMIT = hard
        settings.CELERY_TASK_SOFT_TIME_LIMIT = soft
        assert "predictions.E001" not in _errors()


@pytest.mark.slow
def test_a_worker_refuses_to_start_on_settings_the_checks_reject() -> None:
    """Celery's own Django fixup runs the checks and ignores them: ours exits, saying why."""
    import os
    import subprocess
    import sys

    from tests.conftest import BASE_DIR

    env = {**os.environ, "RECONCILE_AFTER_SECONDS": "60", "CELERY_TASK_TIME_LIMIT": "180"}
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "imagerec", "worker", "--pool=prefork", "--concurrency=1",
         "-Q", "maintenance", "--without-gossip", "--without-mingle"],
        cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip

    assert result.returncode != 0
    assert "imagerec worker refuses to start: RECONCILE_AFTER_SECONDS (60 s) must be greater" in result.stderr
