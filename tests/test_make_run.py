"""`make run` serves as production does: bin/run (what the target runs) started for real on
a spare port, as someone trying imagerec on a laptop would meet it. DEBUG is off, so no
error reaches a browser as a debug page; it answers over plain HTTP on 127.0.0.1, names no
server software, refuses a huge body before reading it, and keeps its secret key in var/."""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from django.contrib.auth.models import User

from tests.conftest import BASE_DIR, _database_url, _free_port

# What Django's debug pages show, and nothing a production page does.
DEBUG_MARKS = ("Traceback", "INSTALLED_APPS", "Request information", "Using the URLconf", "DEBUG = True",
               "settings.py", "You're seeing this error because")  # fmt: skip
PASSWORD = "correct-horse-battery"  # UserFactory's


def _wait_until_up(base: str, server: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert server.poll() is None, "bin/run stopped"
        try:
            if requests.get(f"{base}/health/live", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError("bin/run did not answer in 60 s")


@pytest.fixture
def make_run(tmp_path: Path, media_dir: Path, django_db_blocker: object) -> Iterator[tuple[str, Path]]:
    """``bash bin/run PORT`` with its own var/ folder and the test database; the base URL
    and that folder. Stopped (web server and worker) at the end."""
    port = _free_port()
    var_dir = tmp_path / "var"
    env = {
        key: value for key, value in os.environ.items()
        if key not in ("DEBUG", "SECRET_KEY", "SECRET_KEY_FILE", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    }  # fmt: skip
    env |= {"VAR_DIR": str(var_dir), "VENV": sys.prefix, "DATABASE_URL": _database_url(), "MEDIA_ROOT": str(media_dir)}
    with open(tmp_path / "run.log", "wb") as log:
        server = subprocess.Popen(
            ["bash", "bin/run", str(port)], cwd=BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        try:
            _wait_until_up(f"http://127.0.0.1:{port}", server)
            yield f"http://127.0.0.1:{port}", var_dir
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


def _no_debug_page(response: requests.Response) -> None:
    for mark in DEBUG_MARKS:
        assert mark not in response.text, (response.status_code, mark)


def _login(base: str, username: str, password: str, forged: str = "") -> tuple[requests.Session, int]:
    """A session that posted the login form; with ``forged``, an X-Forwarded-For naming another address."""
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    headers = {"Referer": f"{base}/accounts/login/"} | ({"X-Forwarded-For": forged} if forged else {})
    response = session.post(
        f"{base}/accounts/login/",
        data={"csrfmiddlewaretoken": token.group(1), "username": username, "password": password},
        headers=headers, allow_redirects=False, timeout=10,
    )  # fmt: skip
    return session, response.status_code


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_make_run_serves_like_production_over_plain_http(make_run: tuple[str, Path], user: User) -> None:
    base, var_dir = make_run

    # The secret key: generated into var/, readable by its owner only.
    key = var_dir / "secret_key"
    assert len(key.read_text().strip()) >= 50
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    # Plain HTTP on 127.0.0.1: a login works, nothing is redirected to HTTPS or pinned to it.
    session, status = _login(base, user.username, PASSWORD)
    assert status == 302
    upload = session.get(f"{base}/", timeout=10)
    assert upload.status_code == 200
    assert "Strict-Transport-Security" not in upload.headers
    assert not any(cookie.secure for cookie in session.cookies)
    css = re.search(r'href="(/static/css/app\.[0-9a-f]+\.css)"', upload.text)  # collected, hashed
    assert css is not None
    assert session.get(f"{base}{css.group(1)}", timeout=10).status_code == 200

    # The headers name no server software and carry the policy.
    assert "Server" not in upload.headers
    assert "script-src 'self'" in upload.headers["Content-Security-Policy"]

    # No debug page: an unknown URL (even with ?debug-404), 25 files at once, a 60 MB form.
    missing = requests.get(f"{base}/no-such-page/?debug-404", timeout=10)
    assert missing.status_code == 404
    assert "This page does not exist" in missing.text
    _no_debug_page(missing)
    token = session.cookies.get("csrftoken")
    assert token is not None
    files = [("images", (f"{index}.jpg", b"not an image", "image/jpeg")) for index in range(25)]
    too_many = session.post(f"{base}/", files=files, data={"csrfmiddlewaretoken": token}, timeout=30)
    assert too_many.status_code == 400
    assert "This request could not be read" in too_many.text
    _no_debug_page(too_many)
    form = session.post(
        f"{base}/", data=b"a=" + b"x" * (60 * 1024 * 1024), timeout=60,
        headers={"Content-Type": "application/x-www-form-urlencoded", "X-CSRFToken": token},
    )  # fmt: skip
    assert form.status_code == 400
    _no_debug_page(form)
    api_missing = session.get(f"{base}/api/v1/predictions/not-an-id/", timeout=10)
    assert api_missing.status_code == 404
    assert set(api_missing.json()) == {"error"}

    # 300 MB announced: refused from the header, before a byte of the body is sent.
    with socket.create_connection(("127.0.0.1", int(base.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(
            b"POST /api/v1/predictions/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 314572800\r\n\r\n"
        )
        answer = b"".join(iter(lambda: raw.recv(4096), b"")).decode()  # it closes the connection
    assert answer.startswith("HTTP/1.1 413 ")
    assert '"too_large"' in answer

    # No proxy here, so no X-Forwarded-For is believed: forging one does not escape the lockout.
    for number in range(5):
        _login(base, user.username, "wrong", forged=f"203.0.113.{number}")
    assert _login(base, user.username, PASSWORD, forged="198.51.100.7")[1] == 429
