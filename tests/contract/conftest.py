"""The API as a client meets it: a real server and worker on a database of their own.

``api_stack`` (once per session) migrates a scratch SQLite database under a temporary
directory, registers the shipped model, creates an account and its token with the same
management commands an operator runs, then starts the web server exactly as
docker-compose starts it (gunicorn with uvicorn workers, DEBUG off) and a Celery worker,
and waits until /health/ready says a worker has the model loaded. The tests talk to it
over HTTP only: schemathesis, and the clients generated from the schema.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import yaml
from PIL import Image

from tests.conftest import BASE_DIR, PHOTOS

SCHEMA = BASE_DIR / "docs" / "reference" / "openapi.yaml"
GENERATED_CLIENTS = BASE_DIR / "var" / "clients"
READY_TIMEOUT_SECONDS = 180


@dataclass(frozen=True)
class ApiStack:
    url: str  # http://127.0.0.1:<port>
    token: str  # of a superuser, so the model operations are reachable too
    failed_prediction: str  # a prediction the worker failed (a PNG with damaged pixel data)
    explained_prediction: str  # a succeeded prediction whose top class's explanation is computed

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def photo_jpeg(name: str) -> bytes:
    """One of the real photos shipped with scikit-image (tests.conftest.PHOTOS), as JPEG."""
    with Image.open(PHOTOS[name].path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def damaged_png() -> bytes:
    """A PNG whose header is intact and part of whose pixel data is zeroed: the upload
    accepts it (its header is fine), the worker fails it (the decode is not)."""
    with Image.open(PHOTOS["chelsea"].path) as image:
        buffer = io.BytesIO()
        image.convert("RGB").save(buffer, "PNG")
    png = buffer.getvalue()
    middle = len(png) // 2
    return png[:middle] + bytes(2000) + png[middle + 2000 :]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _web_command(port: int) -> list[str]:
    """docker-compose's web command, bound to this machine's loopback and ``port``."""
    compose = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())
    command = [str(part).replace("0.0.0.0:8000", f"127.0.0.1:{port}") for part in compose["services"]["web"]["command"]]
    assert command[0] == "gunicorn"
    return [sys.executable, "-m", "gunicorn", *command[1:]]


def _manage(env: dict[str, str], *arguments: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *arguments], cwd=BASE_DIR, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"manage.py {' '.join(arguments)}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _wait_until_ready(url: str, processes: list[subprocess.Popen[bytes]], logs: list[Path]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if any(process.poll() is not None for process in processes):
            break
        try:
            if requests.get(f"{url}/health/ready", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    pytest.fail("the stack did not become ready:\n" + "\n".join(log.read_text()[-3000:] for log in logs))


def _final(stack_url: str, headers: dict[str, str], prediction_id: str) -> dict[str, object]:
    for _ in range(6):
        body: dict[str, object] = requests.get(
            f"{stack_url}/api/v1/predictions/{prediction_id}/", params={"wait": 30}, headers=headers, timeout=60
        ).json()
        if body["status"] in ("succeeded", "failed"):
            return body
    raise AssertionError(f"prediction {prediction_id} is still {body['status']}")


def _seed(url: str, headers: dict[str, str]) -> tuple[str, str]:
    """A failed prediction and a succeeded one with its top class's explanation computed."""
    predictions = f"{url}/api/v1/predictions/"
    failed = requests.post(predictions, headers=headers, files={"image": ("damaged.png", damaged_png())}, timeout=60)
    assert failed.status_code == 202, failed.text
    assert _final(url, headers, failed.json()["id"])["status"] == "failed"

    photo = {"image": ("motorcycle.jpg", photo_jpeg("motorcycle"))}
    submitted = requests.post(predictions, headers=headers, params={"wait": 30}, files=photo, timeout=60)
    assert submitted.status_code in (201, 202), submitted.text
    explained = submitted.json()["id"]
    assert _final(url, headers, explained)["status"] == "succeeded"
    explanation = f"{predictions}{explained}/explanation/"
    assert requests.post(explanation, headers=headers, timeout=60).status_code in (200, 202)
    for _ in range(240):
        answer = requests.get(explanation, headers=headers, timeout=60)
        if answer.status_code != 202:
            break
        time.sleep(0.5)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"] == "image/png", answer.text
    return failed.json()["id"], explained


@pytest.fixture(scope="session")
def api_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiStack]:
    work = tmp_path_factory.mktemp("api-stack")
    # A free port, or the one given (a shared machine with port ranges).
    port = int(os.environ.get("CONTRACT_TEST_PORT") or _free_port())
    env = {
        **os.environ,
        "VAR_DIR": str(work / "var"),
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "CELERY_BROKER_URL": "filesystem://",
        "MEDIA_ROOT": str(work / "media"),
        # As deployed: DEBUG off, its secrets given; plain HTTP on the loopback.
        "DEBUG": "false",
        "SECRET_KEY": "contract-tests-only-" + "x" * 40,
        "ALLOWED_HOSTS": "127.0.0.1",
        "SECURE_SSL_REDIRECT": "false",
        "SESSION_COOKIE_SECURE": "false",
        "CSRF_COOKIE_SECURE": "false",
        "SECURE_HSTS_SECONDS": "0",
        "WEB_CONCURRENCY": "1",
        "LOG_LEVEL": "warning",
        # Schemathesis sends a few thousand requests a minute; the limits are tested elsewhere.
        "THROTTLE_SUBMIT": "100000/min",
        "THROTTLE_READ": "100000/min",
        "DJANGO_SUPERUSER_USERNAME": "contract",
        "DJANGO_SUPERUSER_PASSWORD": "contract-tests-password",
    }
    (work / "var").mkdir()
    _manage(env, "migrate", "--noinput")
    _manage(env, "sync_models")
    _manage(env, "ensure_superuser")
    token_output = _manage(env, "drf_create_token", "contract")
    token = re.search(r"Generated token (\w+)", token_output)
    assert token, token_output

    logs = [work / "web.log", work / "worker.log"]
    with open(logs[0], "wb") as web_log, open(logs[1], "wb") as worker_log:
        processes = [
            subprocess.Popen(_web_command(port), cwd=BASE_DIR, env=env, stdout=web_log, stderr=subprocess.STDOUT),
            subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", "imagerec", "worker", "--pool=prefork", "--concurrency=1",
                 "-Q", "inference,maintenance,celery", "--loglevel=WARNING", "--without-gossip", "--without-mingle"],
                cwd=BASE_DIR, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
            ),
        ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_ready(url, processes, logs)
        failed, explained = _seed(url, {"Authorization": f"Token {token.group(1)}"})
        yield ApiStack(url=url, token=token.group(1), failed_prediction=failed, explained_prediction=explained)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
