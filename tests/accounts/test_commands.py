"""ensure_superuser: the admin account that `make run` and docker compose create."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from pytest_django import Settings

from tests.conftest import BASE_DIR, _database_url


@pytest.fixture
def superuser_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("DJANGO_SUPERUSER_PASSWORD", "DJANGO_SUPERUSER_PASSWORD_FILE", "DJANGO_SUPERUSER_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DJANGO_SUPERUSER_USERNAME", "root-admin")
    return monkeypatch


def test_ensure_superuser_is_idempotent(
    db: None, django_user_model: type[User], superuser_env: pytest.MonkeyPatch
) -> None:
    superuser_env.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-admin-password")

    call_command("ensure_superuser")
    call_command("ensure_superuser")

    admin = django_user_model.objects.get(username="root-admin")
    assert admin.is_superuser
    assert admin.check_password("a-long-admin-password")


@pytest.mark.parametrize("password", [None, "admin"])
def test_without_debug_the_default_or_no_password_is_refused(
    db: None, django_user_model: type[User], superuser_env: pytest.MonkeyPatch, settings: Settings, password: str | None
) -> None:
    settings.DEBUG = False
    if password is not None:
        superuser_env.setenv("DJANGO_SUPERUSER_PASSWORD", password)

    with pytest.raises(CommandError, match="DJANGO_SUPERUSER_PASSWORD"):
        call_command("ensure_superuser")

    assert not django_user_model.objects.filter(username="root-admin").exists()


def test_without_debug_a_real_password_is_accepted(
    db: None, django_user_model: type[User], superuser_env: pytest.MonkeyPatch, settings: Settings
) -> None:
    settings.DEBUG = False
    superuser_env.setenv("DJANGO_SUPERUSER_PASSWORD", "a-long-admin-password")

    call_command("ensure_superuser")

    assert django_user_model.objects.get(username="root-admin").check_password("a-long-admin-password")


def test_with_debug_the_default_password_is_admin(
    db: None, django_user_model: type[User], superuser_env: pytest.MonkeyPatch, settings: Settings
) -> None:
    settings.DEBUG = True

    call_command("ensure_superuser")

    assert django_user_model.objects.get(username="root-admin").check_password("admin")


def test_the_password_is_read_from_a_file(
    db: None, django_user_model: type[User], superuser_env: pytest.MonkeyPatch, settings: Settings, tmp_path: Path
) -> None:
    settings.DEBUG = False
    secret = tmp_path / "admin_password"
    secret.write_text("from-a-docker-secret\n")
    superuser_env.setenv("DJANGO_SUPERUSER_PASSWORD_FILE", str(secret))

    call_command("ensure_superuser")

    assert django_user_model.objects.get(username="root-admin").check_password("from-a-docker-secret")


def test_an_unreadable_password_file_is_a_clear_error(
    db: None, superuser_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    superuser_env.setenv("DJANGO_SUPERUSER_PASSWORD_FILE", str(tmp_path / "missing"))

    with pytest.raises(CommandError, match="DJANGO_SUPERUSER_PASSWORD_FILE"):
        call_command("ensure_superuser")


def test_the_refusal_exits_non_zero_without_a_traceback(db: None) -> None:
    env = {
        **os.environ,
        "DEBUG": "false",
        "SECRET_KEY": "test-only-secret-key-that-is-long-enough-for-django",
        "DATABASE_URL": _database_url(),
        "DJANGO_SUPERUSER_USERNAME": "root-admin",
        "DJANGO_SUPERUSER_PASSWORD": "admin",
    }
    env.pop("DJANGO_SUPERUSER_PASSWORD_FILE", None)

    result = subprocess.run(
        [sys.executable, "manage.py", "ensure_superuser"], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )

    assert result.returncode != 0
    assert "Refusing to create the admin account 'root-admin'" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_database_is_a_message_not_a_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path}/missing/dir/db.sqlite3"}
    env.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "ensure_superuser"], cwd=BASE_DIR, env=env, capture_output=True, text=True
    )

    assert result.returncode == 1
    assert "The database cannot be used" in result.stderr
    assert "Traceback" not in result.stderr
