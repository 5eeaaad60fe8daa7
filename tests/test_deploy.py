"""Production settings and the compose file, checked as an operator would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASE_DIR = Path(__file__).resolve().parent.parent


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, capture_output=True, text=True,
        env={**{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"}, **env}, timeout=120,
    )  # fmt: skip


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = _manage(
        "check", "--deploy", "--fail-level", "WARNING",
        DEBUG="false", SECRET_KEY="k" * 20 + "-Zq8v0b!x3Lr7pN2mW9tY4uE6iO1aS5dF",
        ALLOWED_HOSTS="imagerec.example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = _manage("check", DEBUG="false", SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_a_typo_in_a_boolean_setting_fails_loudly() -> None:
    result = _manage("check", DEBUG="ture")
    assert result.returncode != 0
    assert "DEBUG must be true or false" in result.stderr


def test_docker_compose_file_is_valid_and_complete() -> None:
    if shutil.which("docker-compose"):
        command = ["docker-compose", "-f", "docker-compose.yml", "config"]
    elif (
        shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        command = ["docker", "compose", "-f", "docker-compose.yml", "config"]
    else:
        pytest.fail("Neither docker-compose nor the docker compose plugin is installed (bin/ensure-system-deps)")
    result = subprocess.run(
        command, cwd=BASE_DIR, capture_output=True, text=True, timeout=60,
        env={**os.environ, "SECRET_KEY": "test", "DJANGO_SUPERUSER_PASSWORD": "test", "AWS_SECRET_ACCESS_KEY": "test"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for service in ("web:", "worker:", "postgres:", "redis:", "storage:", "healthcheck:", "pgdata:", "storagedata:"):
        assert service in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("MAX_ATTEMPTS", "abc", "MAX_ATTEMPTS must be a whole number, not 'abc'"),
        ("CELERY_TASK_TIME_LIMIT", "3 minutes", "CELERY_TASK_TIME_LIMIT must be a number, not '3 minutes'"),
        ("CACHE_URL", "memcached://127.0.0.1:11211", "CACHE_URL must be a redis:// or rediss:// URL"),
        ("DATABASE_URL", "nonsense://user:s3cret@db/x", "DATABASE_URL must be a database URL"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL must be one of debug, info, warning, error, critical, not 'loud'"),
        ("TIME_ZONE", "Mars/Base", "TIME_ZONE must be a time zone name"),
        ("THROTTLE_READ", "lots", "THROTTLE_READ must be a rate such as 120/min"),
        ("RESULT_CACHE", "maybe", "RESULT_CACHE must be one of user, all, off"),
    ],
)
def test_a_malformed_setting_refuses_to_start_and_names_the_variable(variable: str, value: str, message: str) -> None:
    result = _manage("check", **{variable: value})
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert "s3cret" not in result.stderr


def test_secrets_can_come_from_files_as_docker_secrets_do(tmp_path: Path) -> None:
    secret = tmp_path / "secret_key"
    secret.write_text("k" * 40 + "-from-a-file\n")
    result = _manage(
        "shell", "-c", "from django.conf import settings; print(repr(settings.SECRET_KEY))",
        DEBUG="false", SECRET_KEY="", SECRET_KEY_FILE=str(secret), ALLOWED_HOSTS="imagerec.example.com",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert repr("k" * 40 + "-from-a-file") in result.stdout


def test_an_unreadable_secret_file_is_named_without_a_traceback(tmp_path: Path) -> None:
    result = _manage("check", SECRET_KEY_FILE=str(tmp_path / "missing"))
    assert result.returncode != 0
    assert "SECRET_KEY_FILE names" in result.stderr
    assert "Traceback" not in result.stderr


def test_importing_the_settings_creates_no_directories(tmp_path: Path) -> None:
    var_dir = tmp_path / "var"
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; settings.STATIC_ROOT"],
        cwd=BASE_DIR, capture_output=True, text=True, timeout=120,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "imagerec.settings", "VAR_DIR": str(var_dir)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not var_dir.exists()


def _dockerfile_env() -> dict[str, str]:
    """The ENV the Docker image sets (``ENV A=1 B=2 \\`` lines)."""
    text = (BASE_DIR / "Dockerfile").read_text().replace("\\\n", " ")
    pairs = [line.split(None, 1)[1] for line in text.splitlines() if line.startswith("ENV ")]
    return dict(item.split("=", 1) for chunk in pairs for item in chunk.split())


def test_the_docker_image_defaults_to_production_and_refuses_a_missing_secret_key() -> None:
    image_env = _dockerfile_env()
    assert image_env["DEBUG"] == "false"
    result = _manage("check", **{k: v for k, v in image_env.items() if k in ("DEBUG",)}, SECRET_KEY="")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_compose_web_merges_the_request_metrics_of_its_worker_processes() -> None:
    import yaml

    web = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]["web"]
    assert web["environment"]["PROMETHEUS_MULTIPROC_DIR"]
    assert "python:imagerec.gunicorn" in web["command"]
