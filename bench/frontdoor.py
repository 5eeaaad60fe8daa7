"""The front door's CPU budget: what one submit and one wait cost the web process, by stage.

    python bench/frontdoor.py                 # PostgreSQL + Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL)
    python bench/frontdoor.py --label after   # stored under that label in bench/frontdoor.json

In one process, without a network server: the real ASGI application (``imagerec.asgi``:
the body limit; the fast path for one-image submit and poll, every middleware, URL
routing and DRF for the batch or with ``API_FAST_PATH=off``; authentication, throttling,
parsing, the service, the PostgreSQL insert, the Celery message to Redis, the Redis
wake-up listener) is called
with real multipart requests carrying real photos (``training.photoset``), as uvicorn
would call it. Measured per path:

- ``submit``: ``POST /api/v1/predictions/`` with one photo (202);
- ``submit-wait``: the same with ``?wait=30`` where the prediction is already final when
  the wait starts (the rows are completed by a hook on the enqueue; no worker runs here,
  so this is the web side's cost of waiting, without the model's time);
- ``poll``: ``GET /api/v1/predictions/<id>/?wait=30`` of a final prediction;
- ``batch-K``: ``POST /api/v1/predictions/batch/`` with K photos (per image).

Each path runs ``--n`` requests unprofiled (CPU per request: ``time.process_time``, every
thread) and again under cProfile (each thread its own profiler on its own CPU clock);
the profile's shares by stage, scaled to the unprofiled CPU, give the budget. Stages
are the cumulative CPU of the functions that do them (``STAGES``); "routing, middleware
and the rest" is what remains. Prints the table with the CPU model and writes
``bench/frontdoor.json``. Only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import io
import json
import os
import platform
import pstats
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Each stage: the functions (file suffix, function name) whose cumulative CPU is that stage.
# Nested stages are listed inner first and subtracted from the outer (see ``budget``).
STAND_IN = "stand-in worker"
STAGES: dict[str, list[tuple[str, str]]] = {
    # Each with the fast path's own (predictions/api/fastpath.py), which skips DRF's view.
    "authentication": [
        ("adrf/views.py", "perform_authentication"),
        ("rest_framework/views.py", "perform_authentication"),
        ("predictions/api/fastpath.py", "_authenticate"),
    ],
    "throttling": [
        ("adrf/views.py", "check_throttles"),
        ("rest_framework/views.py", "check_throttles"),
        ("predictions/api/fastpath.py", "_throttle"),
    ],
    "multipart parsing": [
        ("rest_framework/request.py", "_load_data_and_files"),
        ("django/http/request.py", "_load_post_and_files"),
    ],
    "hashing": [("~", "<built-in method _hashlib.openssl_sha256>")],
    "validation (header, size)": [("predictions/images.py", "validate_image_bytes")],
    "model version choice": [("predictions/registry/selectors.py", "model_version_for_user")],
    "storage write": [("django/db/models/fields/files.py", "save")],
    "insert + commit": [
        ("django/db/models/base.py", "save"),
        ("django/db/models/query.py", "bulk_create"),
        ("django/db/backends/base/base.py", "commit"),
    ],
    "enqueue": [("predictions/services/submissions.py", "prediction_enqueue")],
    "wake-up (subscribe)": [
        ("predictions/events.py", "__init__"),
        ("predictions/events.py", "_register"),
        ("predictions/events.py", "_unregister"),
        ("predictions/events.py", "wait"),
        ("predictions/events.py", "add"),
        ("predictions/events.py", "_wake"),
    ],
    "read rows": [("predictions/selectors.py", "_predictions_read_sync")],
    "serialising": [
        ("rest_framework/serializers.py", "data"),
        ("predictions/api/bodies.py", "prediction_body"),
        ("rest_framework/response.py", "rendered_content"),
    ],
    # Not the web's: the stand-in for the worker (its UPDATE and announcement), left out of the total.
    STAND_IN: [("bench/frontdoor.py", "enqueue_and_complete")],
}
# Stages inside another one: their CPU is taken out of the outer stage.
NESTED = {"hashing": "validation (header, size)", "enqueue": STAND_IN}


def cpu_model() -> str:
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def git_revision() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


# --- profiling every thread ------------------------------------------------------------


class ThreadProfiles:
    """A cProfile.Profile per thread (on that thread's CPU clock) for threads started
    while active, plus the calling thread's: ASGI runs each request's sync parts in
    its own thread."""

    def __init__(self) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()

    def _start_in_thread(self, *_: Any) -> None:
        profile = cProfile.Profile(time.thread_time)
        with self._lock:
            self.profiles.append(profile)
        profile.enable()  # replaces this hook in this thread

    def __enter__(self) -> ThreadProfiles:
        threading.setprofile(self._start_in_thread)
        self._main = cProfile.Profile(time.thread_time)
        self.profiles.append(self._main)
        self._main.enable()
        return self

    def __exit__(self, *_: object) -> None:
        self._main.disable()
        threading.setprofile(None)  # type: ignore[arg-type]

    def stats(self) -> pstats.Stats:
        merged = pstats.Stats(self.profiles[0], stream=io.StringIO())
        for profile in self.profiles[1:]:
            profile.snapshot_stats()
            merged.add(profile)
        return merged


def budget(stats: pstats.Stats, total_cpu_ms: float, requests: int) -> dict[str, float]:
    """ms of CPU per request by stage: each stage's share of the profiled CPU, times the
    unprofiled CPU per request."""
    raw: dict[str, float] = {}
    entries = stats.stats  # type: ignore[attr-defined]
    for stage, functions in STAGES.items():
        seconds = 0.0
        for (filename, _line, name), (_cc, _nc, _tt, ct, _callers) in entries.items():
            for suffix, wanted in functions:
                if name == wanted and filename.endswith(suffix):
                    seconds += ct
        raw[stage] = seconds
    for inner, outer in NESTED.items():
        raw[outer] = max(0.0, raw[outer] - raw[inner])
    profiled_total = sum(tt for (_cc, _nc, tt, _ct, _callers) in entries.values())
    if profiled_total <= 0:
        return {}
    shares = {stage: seconds / profiled_total for stage, seconds in raw.items()}
    per_request = total_cpu_ms / requests
    out = {stage: round(share * per_request, 3) for stage, share in shares.items() if share > 0}
    per_request -= out.pop(STAND_IN, 0.0)
    out["routing, middleware and the rest"] = round(per_request - sum(out.values()), 3)
    out["total"] = round(per_request, 3)
    return out


# --- calling the ASGI application ------------------------------------------------------


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, content in files:
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{filename}"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n".encode()
            + content
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


async def call(
    app: Any,
    method: str,
    path: str,
    *,
    token: str,
    body: bytes = b"",
    content_type: str = "",
    query: str = "",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> tuple[int, bytes]:
    """One request as uvicorn hands it to the application: scope, body chunks, response."""
    raw_headers = [(b"host", b"127.0.0.1"), (b"authorization", f"Token {token}".encode())]
    if body:
        raw_headers += [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw_headers += headers or []
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw_headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    chunks = [body[i : i + 65536] for i in range(0, len(body), 65536)] or [b""]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if chunks:
            chunk = chunks.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(chunks)}
        await asyncio.sleep(3600)  # the client stays connected
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


# --- the run -----------------------------------------------------------------------------


def scratch_services(database_url: str, redis_url: str) -> None:
    """The bench's own scratch database (created if missing) and Redis database (emptied:
    messages queued by an earlier run)."""
    if database_url.startswith("postgres"):
        subprocess.run(
            ["createdb", "-h", "127.0.0.1", "-U", "root", database_url.rsplit("/", 1)[1]], capture_output=True
        )
    if redis_url.startswith("redis://127.0.0.1"):
        subprocess.run(["redis-cli", "-u", redis_url, "flushdb"], capture_output=True)


def setup_django(args: argparse.Namespace) -> None:
    os.environ.update(
        DJANGO_SETTINGS_MODULE="imagerec.settings",
        DATABASE_URL=args.database_url,
        CELERY_BROKER_URL=args.redis_url,
        CACHE_URL=args.redis_url,
        EVENTS_REDIS_URL=args.redis_url,
        RESULT_CACHE="off",
        DEBUG="false",
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        SECURE_HSTS_SECONDS="0",
        SECRET_KEY="bench-frontdoor-" + "x" * 40,
        MEDIA_ROOT=str(ROOT / "var" / "bench" / "frontdoor-media"),
        THROTTLE_SUBMIT="1000000/min",
        THROTTLE_READ="1000000/min",
        LOG_LEVEL="warning",
    )
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: its own counters, no files
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def complete_on_enqueue() -> None:
    """No worker runs here: the enqueue still sends its real message to Redis, then the
    row is completed and announced on Redis with its outcome (as the worker does) so
    that a wait ends."""
    from django.utils import timezone

    from predictions import events
    from predictions.models import Prediction, PredictionStatus
    from predictions.outcomes import outcome_message
    from predictions.services import submissions

    original = submissions.prediction_enqueue

    def enqueue_and_complete(**kwargs: Any) -> bool:
        sent = original(**kwargs)
        ids = [kwargs["prediction_id"], *kwargs.get("chunk", ())]  # a message carries a chunk of rows
        Prediction.objects.filter(id__in=ids).update(
            status=PredictionStatus.SUCCEEDED,
            label="tabby",
            class_id="n02123045",
            confidence=0.9,
            top_predictions=[{"label": "tabby", "class_id": "n02123045", "score": 0.9}],
            total_ms=20.0,
            completed_at=timezone.now(),
            started_at=timezone.now(),
        )
        # As the worker announces them: with the outcome, so that a waiter holding the row
        # need not read it again (predictions.outcomes).
        completed = list(Prediction.objects.select_related("model_version").filter(id__in=ids))
        events.prediction_final_publish([p.id for p in completed], [outcome_message(p) for p in completed])
        return sent

    submissions.prediction_enqueue = enqueue_and_complete  # type: ignore[assignment]


async def run_path(app: Any, name: str, request: Any, n: int) -> dict[str, Any]:
    for _ in range(min(5, n)):  # warm-up
        await request()
    walls: list[float] = []
    wall = time.perf_counter()
    cpu = time.process_time()
    for _ in range(n):
        began = time.perf_counter()
        await request()
        walls.append((time.perf_counter() - began) * 1000)
    cpu_ms = (time.process_time() - cpu) * 1000
    wall_ms = (time.perf_counter() - wall) * 1000
    with ThreadProfiles() as profiles:
        for _ in range(n):
            await request()
    stats = profiles.stats()
    stages = budget(stats, cpu_ms, n)
    if os.environ.get("BENCH_FRONTDOOR_DUMP"):
        stats.stream = sys.stdout  # type: ignore[attr-defined]
        print(f"--- {name}")
        stats.sort_stats(os.environ["BENCH_FRONTDOOR_DUMP"]).print_stats(45)
    return {
        "requests": n,
        "cpu_ms_per_request": round(cpu_ms / n, 3),
        "wall_ms_per_request": round(wall_ms / n, 3),
        "wall_ms_p50_max": [round(sorted(walls)[n // 2], 2), round(max(walls), 2)],
        "stages_ms": stages,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_FRONTDOOR_N", "150")))
    parser.add_argument("--batches", default=os.environ.get("BENCH_FRONTDOOR_BATCHES", "8,20"))
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/imagerec_frontdoor"),
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--label", default=os.environ.get("BENCH_LABEL", ""))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "frontdoor.json")
    args = parser.parse_args(argv)
    scratch_services(args.database_url, args.redis_url)
    setup_django(args)

    from rest_framework.authtoken.models import Token

    from imagerec.asgi import application as app  # what the server serves: the body limit, the fast path, Django
    from predictions.models import Prediction
    from tests.factories import UserFactory
    from training.photoset import photoset

    complete_on_enqueue()
    user = UserFactory.create(username=f"frontdoor-{uuid.uuid4().hex[:8]}")
    token = Token.objects.create(user=user).key
    photos = [(p.name, p.read_bytes()) for p in photoset(40, ROOT / "var" / "bench" / "frontdoor-photos")]
    counter = iter(range(10**9))

    def next_photos(k: int) -> list[tuple[str, bytes]]:
        return [photos[next(counter) % len(photos)] for _ in range(k)]

    async def submit(query: str = "") -> None:
        body, ctype = multipart(next_photos(1), {"top_k": "5"})
        status, answer = await call(
            app, "POST", "/api/v1/predictions/", token=token, body=body, content_type=ctype, query=query
        )
        assert status in (201, 202), (status, answer[:300])

    async def submit_wait() -> None:
        await submit("wait=30")

    final = Prediction.objects.filter(user=user).values_list("id", flat=True)

    async def poll() -> None:
        status, answer = await call(app, "GET", f"/api/v1/predictions/{poll_id}/", token=token, query="wait=30")
        assert status == 200, (status, answer[:300])

    def batch(k: int) -> Any:
        async def request() -> None:
            body, ctype = multipart(next_photos(k), {"top_k": "5"})
            status, answer = await call(
                app, "POST", "/api/v1/predictions/batch/", token=token, body=body, content_type=ctype, query="wait=30"
            )
            assert status == 201, (status, answer[:300])

        return request

    async def run_all() -> dict[str, Any]:
        paths: dict[str, Any] = {}
        paths["submit"] = await run_path(app, "submit", submit, args.n)
        paths["submit-wait"] = await run_path(app, "submit-wait", submit_wait, args.n)
        global poll_id
        poll_id = await asyncio.to_thread(lambda: final.first())
        paths["poll"] = await run_path(app, "poll", poll, args.n)
        for k in [int(x) for x in args.batches.split(",") if x]:
            result = await run_path(app, f"batch-{k}", batch(k), max(5, args.n // k))
            result["images_per_request"] = k
            result["cpu_ms_per_image"] = round(result["stages_ms"]["total"] / k, 3)
            paths[f"batch-{k}"] = result
        return paths

    started = time.time()
    paths = asyncio.run(run_all())
    record = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "note": "shared machine (other helpers' test suites ran meanwhile)",
        },
        "seconds": round(time.time() - started, 1),
        "paths": paths,
    }
    print(report(record))
    existing: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.label:
        existing.setdefault("runs", {})[args.label] = record
    else:
        existing.update({k: v for k, v in record.items()})
    args.out.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


poll_id: Any = None


def report(record: dict[str, Any]) -> str:
    paths = record["paths"]
    stages = [*(s for s in STAGES if s != STAND_IN), "routing, middleware and the rest", "total"]
    names = list(paths)
    lines = [
        f"CPU: {record['machine']['cpu']} ({record['machine']['cores']} cores), revision {record['revision']}",
        "ms of CPU per request (batch: per request of K images), one process, all threads",
        "| stage | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for stage in stages:
        cells = [
            f"{paths[n]['stages_ms'].get(stage, 0):.2f}" if paths[n]["stages_ms"].get(stage) else "-" for n in names
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append(
        "| wall ms per request | " + " | ".join(f"{paths[n]['wall_ms_per_request']:.2f}" for n in names) + " |"
    )
    per_image = [f"{paths[n]['stages_ms']['total'] / paths[n].get('images_per_request', 1):.2f}" for n in names]
    lines.append("| CPU ms per image | " + " | ".join(per_image) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
