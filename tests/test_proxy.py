"""The reverse proxy docker-compose puts in front of the web service, run for real: Debian's
nginx with deploy/nginx.conf.template as the official image fills it in, before the web
server started as compose starts it. It refuses a body over the limit from its
Content-Length, names no version, and passes on the client's real address, so a forged
X-Forwarded-For does not escape the login lockout."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from django.contrib.auth.models import User

from tests.conftest import BASE_DIR, _compose_web_command, _database_url, _free_port

PASSWORD = "correct-horse-battery"  # UserFactory's


def _compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]
    return services


def _nginx() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
    if found is None:
        pytest.fail("nginx is not installed (bin/ensure-system-deps installs it)")
    return found


def test_compose_publishes_the_proxy_only_with_the_same_body_limit_as_the_web() -> None:
    services = _compose()
    proxy, web = services["proxy"], services["web"]

    assert proxy["image"].startswith("nginx:")
    assert proxy["ports"] == ["${PORT:-8000}:80"]
    assert "ports" not in web
    assert web["environment"]["FORWARDED_ALLOW_IPS"] == "*"
    mount = "./deploy/nginx.conf.template:/etc/nginx/templates/default.conf.template:ro"
    assert proxy["volumes"] == [mount]
    assert proxy["environment"]["MAX_REQUEST_BYTES"] == web["environment"]["MAX_REQUEST_BYTES"]
    assert "client_max_body_size ${MAX_REQUEST_BYTES};" in (BASE_DIR / "deploy/nginx.conf.template").read_text()


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        assert process.poll() is None, url
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer")


@pytest.fixture
def proxied(tmp_path: Path, media_dir: Path) -> Iterator[str]:
    """nginx on a spare port in front of compose's web command; the proxy's base URL."""
    nginx = _nginx()
    web_port, proxy_port = _free_port(), _free_port()
    web_env = _compose()["web"]["environment"]
    env = {
        **os.environ, "DATABASE_URL": _database_url(), "MEDIA_ROOT": str(media_dir), "WEB_CONCURRENCY": "1",
        "FORWARDED_ALLOW_IPS": web_env["FORWARDED_ALLOW_IPS"], "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    # As the official image does (envsubst of the variables set); the upstream and the port
    # are this machine's instead of compose's network.
    limit = _compose()["proxy"]["environment"]["MAX_REQUEST_BYTES"].split(":-")[1].rstrip("}")
    site = (BASE_DIR / "deploy/nginx.conf.template").read_text().replace("${MAX_REQUEST_BYTES}", limit)
    site = site.replace("server web:8000;", f"server 127.0.0.1:{web_port};").replace(
        "listen 80;", f"listen 127.0.0.1:{proxy_port};"
    )
    for folder in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (tmp_path / folder).mkdir(mode=0o777)
        (tmp_path / folder).chmod(0o777)  # nginx's workers run as nobody
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {tmp_path}/nginx.pid; error_log stderr warn;\n"
        "events {}\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy;\n"
        f"  fastcgi_temp_path {tmp_path}/fastcgi; uwsgi_temp_path {tmp_path}/uwsgi; scgi_temp_path {tmp_path}/scgi;\n"
        f"  include {tmp_path}/site.conf; }}\n"
    )
    web = subprocess.Popen(_compose_web_command(web_port), cwd=BASE_DIR, env=env, start_new_session=True)
    proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")], start_new_session=True)
    try:
        _wait_for(f"http://127.0.0.1:{web_port}/health/live", web)
        _wait_for(f"http://127.0.0.1:{proxy_port}/health/live", proxy)
        yield f"http://127.0.0.1:{proxy_port}"
    finally:
        for process in (proxy, web):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _login(base: str, username: str, password: str, forged: str) -> int:
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    return session.post(
        f"{base}/accounts/login/",
        data={"csrfmiddlewaretoken": token.group(1), "username": username, "password": password},
        headers={"X-Forwarded-For": forged, "Referer": f"{base}/accounts/login/"}, allow_redirects=False, timeout=10,
    ).status_code  # fmt: skip


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_proxy_refuses_a_large_body_unread_and_passes_the_real_address(proxied: str, user: User) -> None:
    health = requests.get(f"{proxied}/health/live", timeout=10)
    assert health.status_code == 200
    assert health.headers["Server"] == "nginx"

    with socket.create_connection(("127.0.0.1", int(proxied.rsplit(":", 1)[1])), timeout=10) as raw:
        raw.sendall(
            b"POST /api/v1/predictions/ HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 314572800\r\n\r\n"
        )
        assert raw.recv(4096).startswith(b"HTTP/1.1 413 ")

    # Five wrong passwords, each "from" another address: the proxy replaces the header with
    # the real one, so the lockout counts all five against this client.
    wrong = [_login(proxied, user.username, "wrong", forged=f"203.0.113.{number}") for number in range(5)]
    assert wrong[:4] == [200] * 4
    assert _login(proxied, user.username, PASSWORD, forged="198.51.100.7") == 429
