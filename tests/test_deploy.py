"""Production settings and the compose file, checked as an operator would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pytest_django import Settings

BASE_DIR = Path(__file__).resolve().parent.parent
K8S_DIR = BASE_DIR / "deploy" / "k8s"
# The Kubernetes version the manifests are checked against, with the schemas
# kubernetes-validate ships (no network): strict, so a misspelt field fails too.
KUBERNETES_VERSION = "1.33.0"


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


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    return [
        (str(path.relative_to(BASE_DIR)), document)
        for path in sorted(K8S_DIR.rglob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document
    ]


def _containers(kind: str, name: str) -> list[dict[str, Any]]:
    (resource,) = [doc for _, doc in _manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    containers: list[dict[str, Any]] = resource["spec"]["template"]["spec"]["containers"]
    return containers


def test_the_compose_worker_can_be_scaled_to_any_number_of_hosts() -> None:
    """`docker compose up --scale worker=N`: no fixed name or published port on the worker,
    and each container names itself after its hostname."""
    worker = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker
    assert "inference@%h" in worker["command"]


def test_every_kubernetes_manifest_is_valid_for_the_pinned_kubernetes_version() -> None:
    manifests = _manifests()
    builtin = [(path, doc) for path, doc in manifests if not doc["apiVersion"].startswith("keda.sh/")]
    for path, document in builtin:
        try:
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{path}: {document['kind']} {document['metadata']['name']}: {error.message}")
    kinds = {doc["kind"] for _, doc in builtin}
    assert {"ConfigMap", "Secret", "Deployment", "Service", "Job", "HorizontalPodAutoscaler"} <= kinds


def test_kubernetes_web_and_workers_probe_health_and_read_keys_from_the_secret() -> None:
    (web,) = _containers("Deployment", "imagerec-web")
    assert web["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert web["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    (worker,) = _containers("Deployment", "imagerec-worker")
    assert "inference@%h" in worker["command"]
    assert "inference@$HOSTNAME" in " ".join(worker["livenessProbe"]["exec"]["command"])
    secret_keys = {key for _, doc in _manifests() if doc["kind"] == "Secret" for key in doc["stringData"]}
    assert {"SECRET_KEY", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY"} <= secret_keys
    config_keys = {key for _, doc in _manifests() if doc["kind"] == "ConfigMap" for key in doc["data"]}
    assert not config_keys & secret_keys  # no secret in the ConfigMap
    for name in ("imagerec-web", "imagerec-worker", "imagerec-maintenance"):
        for container in _containers("Deployment", name):
            sources = {ref.get("secretRef", ref.get("configMapRef", {})).get("name") for ref in container["envFrom"]}
            assert sources == {"imagerec"}, name


@pytest.mark.django_db
def test_the_worker_autoscalers_read_the_queue_the_app_reports() -> None:
    """KEDA reads the broker's list for the inference queue; the HPA reads the app's own
    queue-depth gauge from /metrics: both name what the app really exports."""
    from predictions.operations import health, metrics

    documents = {doc["kind"]: doc for _, doc in _manifests()}
    (trigger,) = documents["ScaledObject"]["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == health.INFERENCE_QUEUE
    assert documents["ScaledObject"]["spec"]["scaleTargetRef"]["name"] == "imagerec-worker"
    assert documents["ScaledObject"]["spec"]["minReplicaCount"] >= 1  # the web's readiness needs a worker
    hpa = documents["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "imagerec-worker"
    (metric,) = hpa["metrics"]
    exported = metrics.metrics_text().decode()
    selector = metric["external"]["metric"]["selector"]["matchLabels"]
    assert f'{metric["external"]["metric"]["name"]}{{queue="{selector["queue"]}"}}' in exported


def test_the_deploy_check_still_asks_for_the_security_middleware(settings: Settings) -> None:
    """Django's own W001/W002 are silenced (they look for its class paths, the site runs
    subclasses): predictions.W001/W002 warn when the headers' middleware is missing."""
    from predictions.operations.checks import security_middleware_check

    assert security_middleware_check() == []
    settings.MIDDLEWARE = [
        path for path in settings.MIDDLEWARE if not path.endswith(("SecurityMiddleware", "XFrameOptionsMiddleware"))
    ]
    assert [message.id for message in security_middleware_check()] == ["predictions.W001", "predictions.W002"]
