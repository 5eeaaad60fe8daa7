"""The web server itself: gunicorn with uvicorn workers (today's) against granian, side by side.

    python bench/servers.py            # needs PostgreSQL + Redis, granian installed (pip install granian)

Each server runs the same application (``imagerec.asgi``) with one worker process pinned
to CPU 0; the clients (aiohttp, 16 at a time) run on CPU 1. Per server and path: requests
per second and the server's CPU per request (its whole process tree, psutil), for
``poll`` (``GET /api/v1/predictions/<id>/?wait=30`` of a final prediction) and ``submit``
(``POST /api/v1/predictions/`` with a real photo, 202; no worker runs, rows stay pending).
The servers are measured in alternating rounds so that a busy neighbour hurts both alike.
Prints the table with the CPU model and writes ``bench/servers.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.frontdoor import cpu_model, git_revision  # noqa: E402

PORT = int(os.environ.get("BENCH_PORT", "18410"))
DATABASE_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/imagerec_servers")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
N = int(os.environ.get("BENCH_SERVERS_N", "600"))
ROUNDS = int(os.environ.get("BENCH_SERVERS_ROUNDS", "2"))
CONCURRENCY = 16

SERVERS = {
    "gunicorn+uvicorn": [
        "gunicorn", "imagerec.asgi:application", "--config", "python:imagerec.gunicorn",
        "--bind", f"127.0.0.1:{PORT}", "--workers", "1",
    ],
    "granian": [
        "granian", "--interface", "asgi", "--host", "127.0.0.1", "--port", str(PORT), "--workers", "1",
        "--loop", "uvloop", "--no-ws", "imagerec.asgi:application",
    ],
}  # fmt: skip


def env() -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    return dict(
        os.environ,
        PATH=f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        DJANGO_SETTINGS_MODULE="imagerec.settings",
        DATABASE_URL=DATABASE_URL,
        CELERY_BROKER_URL=REDIS_URL,
        CACHE_URL=REDIS_URL,
        EVENTS_REDIS_URL=REDIS_URL,
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        SECURE_HSTS_SECONDS="0",
        SECRET_KEY="bench-servers-" + "x" * 40,
        MEDIA_ROOT=str(ROOT / "var" / "bench" / "servers-media"),
        STATIC_ROOT=str(ROOT / "var" / "bench" / "servers-static"),
        THROTTLE_SUBMIT="1000000/min",
        THROTTLE_READ="1000000/min",
        RESULT_CACHE="off",
        LOG_LEVEL="warning",
        PROMETHEUS_MULTIPROC_DIR=str(ROOT / "var" / "bench" / "servers-prometheus"),
    )


SETUP = """
from django.utils import timezone
from rest_framework.authtoken.models import Token
from tests.factories import SucceededPredictionFactory, UserFactory
import uuid
user = UserFactory.create(username=f"servers-{uuid.uuid4().hex[:8]}")
token = Token.objects.create(user=user).key
prediction = SucceededPredictionFactory.create(user=user, completed_at=timezone.now())
print("SETUP", token, prediction.id)
"""


def setup() -> tuple[str, str]:
    (ROOT / "var" / "bench" / "servers-prometheus").mkdir(parents=True, exist_ok=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "root", DATABASE_URL.rsplit("/", 1)[1]], capture_output=True)
    subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], capture_output=True)
    python = [sys.executable, "manage.py"]
    subprocess.run([*python, "migrate", "-v0"], cwd=ROOT, env=env(), check=True)
    subprocess.run([*python, "collectstatic", "--noinput", "-v0"], cwd=ROOT, env=env(), check=True)
    out = subprocess.run([*python, "shell", "-c", SETUP], cwd=ROOT, env=env(), check=True, capture_output=True)
    line = next(x for x in out.stdout.decode().splitlines() if x.startswith("SETUP"))
    _, token, prediction_id = line.split()
    return token, prediction_id


def tree_cpu(root: psutil.Process) -> float:
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


async def load(path: str, token: str, prediction_id: str, photo: bytes) -> None:
    headers = {"Authorization": f"Token {token}"}
    counter = iter(range(N))
    async with aiohttp.ClientSession(f"http://127.0.0.1:{PORT}", headers=headers) as session:

        async def client() -> None:
            for _ in counter:
                if path == "poll":
                    async with session.get(f"/api/v1/predictions/{prediction_id}/?wait=30") as response:
                        assert response.status == 200, await response.text()
                        await response.read()
                else:
                    form = aiohttp.FormData()
                    form.add_field("image", photo, filename="photo.jpg", content_type="image/jpeg")
                    async with session.post("/api/v1/predictions/", data=form) as response:
                        assert response.status == 202, await response.text()
                        await response.read()

        await asyncio.gather(*(client() for _ in range(CONCURRENCY)))


def measure(name: str, token: str, prediction_id: str, photo: bytes) -> dict[str, Any]:
    proc = subprocess.Popen(
        ["taskset", "-c", "0", *SERVERS[name]], cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health/live", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        root = psutil.Process(proc.pid)
        asyncio.run(load("poll", token, prediction_id, photo))  # warm-up
        figures = {}
        for path in ("poll", "submit"):
            cpu, wall = tree_cpu(root), time.perf_counter()
            asyncio.run(load(path, token, prediction_id, photo))
            wall = time.perf_counter() - wall
            figures[path] = {"requests_per_s": N / wall, "cpu_ms_per_request": (tree_cpu(root) - cpu) * 1000 / N}
        return figures
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


def main() -> int:
    os.sched_setaffinity(0, {1})
    token, prediction_id = setup()
    from training.photoset import photoset

    photo = photoset(1, ROOT / "var" / "bench" / "frontdoor-photos")[0].read_bytes()
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in SERVERS}
    for _ in range(ROUNDS):
        for name in SERVERS:
            results[name].append(measure(name, token, prediction_id, photo))
    best = {
        name: {
            path: {
                "requests_per_s": round(max(r[path]["requests_per_s"] for r in runs), 1),
                "cpu_ms_per_request": round(min(r[path]["cpu_ms_per_request"] for r in runs), 2),
            }
            for path in ("poll", "submit")
        }
        for name, runs in results.items()
    }
    print(f"CPU: {cpu_model()} ({os.cpu_count()} cores), revision {git_revision()}; shared machine")
    print(f"one worker process on CPU 0, {CONCURRENCY} clients on CPU 1, {N} requests per path, best of {ROUNDS}")
    print("| server | poll req/s | poll CPU ms/req | submit req/s | submit CPU ms/req |")
    print("|---|---|---|---|---|")
    for name, paths in best.items():
        poll, submit = paths["poll"], paths["submit"]
        print(
            f"| {name} | {poll['requests_per_s']} | {poll['cpu_ms_per_request']} | "
            f"{submit['requests_per_s']} | {submit['cpu_ms_per_request']} |"
        )
    out = ROOT / "bench" / "servers.json"
    out.write_text(
        json.dumps({"cpu": cpu_model(), "revision": git_revision(), "n": N, "best": best, "runs": results}, indent=2)
        + "\n"
    )
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
