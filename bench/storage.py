"""Single-image latency with media on S3 (SeaweedFS) against media on the local disk, in
one run on this machine: `make bench-storage`.

    python bench/storage.py                 # 2 rounds x 40 photos per mode (local, s3, local, s3)
    python bench/storage.py --n 20 --rounds 1

For each mode the real stack starts as docker-compose.yml commands it (gunicorn web and a
Celery worker, PostgreSQL, Redis db BENCH_REDIS_DB), binding 127.0.0.1; the s3 mode also
has a SeaweedFS started by bin/storage, with MEDIA_STORAGE=s3 (and so models distributed
through the bucket, fetched once by the worker). A client posts distinct real photos
(training.photoset) one at a time with ``?wait=30`` and times each answer: the latency a
person sees for one image, upload to label. Rounds alternate the modes so a busy moment of
the (shared) machine falls on both. Also times the storage calls alone (save, read, delete
of a photo through Django's storage API) for each backend. Writes bench/storage.json.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from e2e import _load_yaml, machine_info, percentile, stack_commands  # noqa: E402

VAR = ROOT / "var" / "bench-storage"


def _env(mode: str, *, port: int, database: str, redis_db: str, s3: dict[str, str]) -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MEDIA_", "MODEL_DISTRIBUTION"))}
    env.update(
        PATH=f"{venv_bin}:{env.get('PATH', '/usr/bin:/bin')}",
        DATABASE_URL=f"postgres://root@127.0.0.1:5432/{database}",
        CELERY_BROKER_URL=f"redis://127.0.0.1:6379/{redis_db}",
        CACHE_URL="",
        VAR_DIR=str(VAR / mode),
        MEDIA_ROOT=str(VAR / mode / "media"),
        STATIC_ROOT=str(VAR / "static"),
        MODEL_DIR=str(ROOT / "models"),
        DEBUG="false",
        SECRET_KEY="bench-storage-only-secret-key-not-for-production-0123456789",  # noqa: S106 - scratch stack
        ALLOWED_HOSTS="127.0.0.1",
        SECURE_SSL_REDIRECT="false",
        SESSION_COOKIE_SECURE="false",
        CSRF_COOKIE_SECURE="false",
        THROTTLE_SUBMIT="1000000/min",
        THROTTLE_READ="1000000/min",
        RESULT_CACHE="off",
        LOG_LEVEL="WARNING",
        DJANGO_SUPERUSER_USERNAME="admin",
        DJANGO_SUPERUSER_PASSWORD="bench-storage-Admin-password-4711",  # noqa: S106 - scratch database
        TF_CPP_MIN_LOG_LEVEL="2",
        PYTHONUNBUFFERED="1",
        WEB_CONCURRENCY="1",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if mode == "s3":
        env.update(s3)
    return env


class ModeStack:
    """Web + worker of one mode, on a fresh database."""

    def __init__(self, mode: str, env: dict[str, str], port: int, database: str) -> None:
        self.mode, self.env, self.port, self.database = mode, env, port, database
        self.procs: list[subprocess.Popen[bytes]] = []

    def _run(self, argv: list[str]) -> str:
        done = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> str:
        shutil.rmtree(VAR / self.mode, ignore_errors=True)
        (VAR / self.mode / "media").mkdir(parents=True)
        subprocess.run(
            ["dropdb", "-h", "127.0.0.1", "-U", "root", "--if-exists", "--force", self.database], check=False
        )
        self._run(["createdb", "-h", "127.0.0.1", "-U", "root", self.database])
        redis_db = self.env["CELERY_BROKER_URL"].rsplit("/", 1)[1]
        self._run(["redis-cli", "-h", "127.0.0.1", "-n", redis_db, "flushdb"])
        commands = stack_commands(_load_yaml(ROOT / "docker-compose.yml"), self.port)
        for step in commands["setup"]:
            self._run(step)
        self._run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"])
        token = self._run(
            [sys.executable, "manage.py", "shell", "-c",
             "from django.contrib.auth import get_user_model; from rest_framework.authtoken.models import Token; "
             "u, _ = get_user_model().objects.get_or_create(username='bench'); "
             "print(Token.objects.get_or_create(user=u)[0].key)"],
        ).strip().splitlines()[-1]  # fmt: skip
        for name, argv in (("web", commands["web"]), ("worker", commands["worker"])):
            with open(VAR / self.mode / f"{name}.log", "ab") as log:
                self.procs.append(
                    subprocess.Popen(
                        argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                    )
                )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            ready = f"http://127.0.0.1:{self.port}/health/ready"
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(ready, timeout=5) as answer,
            ):
                if answer.status == 200:
                    return token
            time.sleep(1)
        raise RuntimeError(f"{self.mode}: not ready; see {VAR / self.mode}")

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def _post(port: int, token: str, name: str, content: bytes) -> tuple[float, dict[str, Any]]:
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/predictions/?wait=30",
        data=body,
        headers={"Authorization": f"Token {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    began = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
        payload = json.loads(answer.read())
    return (time.perf_counter() - began) * 1000, payload


def storage_calls(s3: dict[str, str], content: bytes, repeats: int) -> dict[str, dict[str, float | None]]:
    """Save, read and delete one photo through Django's storage API, per backend (ms, p50),
    the backends taking turns (three passes each) so a busy moment falls on both."""
    script = f"""
import json, os, time, tempfile
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
content = open({str(VAR / "probe.jpg")!r}, "rb").read()
times = {{"save": [], "read": [], "delete": []}}
for i in range({repeats}):
    t = time.perf_counter(); name = default_storage.save(f"bench/probe-{{i}}.jpg", ContentFile(content))
    times["save"].append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    read_bytes = getattr(default_storage, "read_bytes", None)  # as the worker reads (predictions.storage)
    if read_bytes: read_bytes(name)
    else:
        with default_storage.open(name, "rb") as f: f.read()
    times["read"].append((time.perf_counter() - t) * 1000)
    t = time.perf_counter(); default_storage.delete(name); times["delete"].append((time.perf_counter() - t) * 1000)
print(json.dumps(times))
"""
    (VAR / "probe.jpg").write_bytes(content)
    times: dict[str, dict[str, list[float]]] = {"local": {}, "s3": {}}
    for mode in ("local", "s3") * 3:
        env = _env(mode, port=0, database="unused", redis_db="1", s3=s3)
        env["DATABASE_URL"] = f"sqlite:///{VAR / 'probe.sqlite3'}"
        (VAR / mode / "media").mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
            check=True,
        )  # fmt: skip
        for op, values in json.loads(done.stdout.strip().splitlines()[-1]).items():
            times[mode].setdefault(op, []).extend(values)
    return {
        mode: {f"{op}_p50_ms": percentile(values, 50) for op, values in per_op.items()}
        for mode, per_op in times.items()
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_N", "40")), help="photos per mode per round")
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", "2")))
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "18332")))
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("BENCH_S3_PORT", "18334")))
    parser.add_argument("--internal-port", type=int, default=int(os.environ.get("BENCH_S3_INTERNAL_PORT", "19333")))
    parser.add_argument("--database", default=os.environ.get("BENCH_DATABASE", "h21store_bench"))
    parser.add_argument("--redis-db", default=os.environ.get("BENCH_REDIS_DB", "1"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "storage.json")
    parser.add_argument("--calls-only", action="store_true", help="time the storage calls only (no stacks)")
    args = parser.parse_args()
    from training.photoset import photoset

    machine = machine_info()
    print(f"CPU: {machine['cpu_model']}, {machine['cores']} cores (a shared machine: other jobs were running)")
    VAR.mkdir(parents=True, exist_ok=True)
    paths = photoset(args.n * args.rounds * 2 + 6, ROOT / "var" / "photoset")
    photos = [(p.name, p.read_bytes()) for p in paths]
    storage_dir = VAR / "seaweedfs"
    shutil.rmtree(storage_dir, ignore_errors=True)
    subprocess.run(
        [sys.executable, str(ROOT / "bin" / "storage"), "start", "--dir", str(storage_dir), "--port", str(args.s3_port),
         "--internal-port", str(args.internal_port)], check=True,
    )  # fmt: skip
    s3 = {"MEDIA_STORAGE": "s3", "AWS_S3_ENDPOINT_URL": f"http://127.0.0.1:{args.s3_port}"}
    latencies: dict[str, list[float]] = {"local": [], "s3": []}
    rounds: list[dict[str, Any]] = []
    try:
        calls = storage_calls(s3, photos[0][1], repeats=50)
        print(f"storage calls (p50 ms): {json.dumps(calls)}", flush=True)
        if args.calls_only:
            calls_out = args.out.with_name("storage-calls.json")
            when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            record = {"when": when, "machine": machine, "shared_machine": True, "storage_calls": calls}
            calls_out.write_text(json.dumps(record, indent=2) + "\n")
            print(f"written to {calls_out}")
            return 0
        cursor = 0
        for round_index in range(args.rounds):
            for mode in ("local", "s3"):
                env = _env(mode, port=args.port, database=args.database, redis_db=args.redis_db, s3=s3)
                stack = ModeStack(mode, env, args.port, args.database)
                try:
                    token = stack.start()
                    for name, content in photos[-3:]:  # warm-up (and, for s3, the model fetch)
                        _post(args.port, token, name, content)
                    measured = []
                    for name, content in photos[cursor : cursor + args.n]:
                        elapsed, payload = _post(args.port, token, name, content)
                        if payload.get("status") != "succeeded":
                            raise RuntimeError(f"{mode}: {name} ended {payload.get('status')}: {payload}")
                        measured.append(elapsed)
                    cursor += args.n
                finally:
                    stack.stop()
                latencies[mode] += measured
                rounds.append({"round": round_index + 1, "mode": mode, "p50_ms": percentile(measured, 50)})
                print(f"round {round_index + 1} {mode}: p50 {percentile(measured, 50):.1f} ms", flush=True)
    finally:
        subprocess.run([sys.executable, str(ROOT / "bin" / "storage"), "stop", "--dir", str(storage_dir)], check=False)
    summary = {
        mode: {
            "n": len(values),
            "p50_ms": percentile(values, 50),
            "p90_ms": percentile(values, 90),
            "mean_ms": statistics.fmean(values),
        }
        for mode, values in latencies.items()
    }
    added = (summary["s3"]["p50_ms"] or 0) - (summary["local"]["p50_ms"] or 0)
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "shared_machine": True,
        "what": "one photo at a time through POST /api/v1/predictions/?wait=30, web + worker as compose runs them",
        "modes": summary,
        "rounds": rounds,
        "s3_adds_p50_ms": round(added, 2),
        "goal_ms": 5,
        "storage_calls": calls,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'mode':<6} {'n':>4} {'p50 ms':>8} {'p90 ms':>8}")
    for mode, row in summary.items():
        print(f"{mode:<6} {row['n']:>4} {row['p50_ms']:>8.1f} {row['p90_ms']:>8.1f}")
    print(f"S3 adds {added:.1f} ms to the single-image p50 (goal: at most 5 ms); written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
