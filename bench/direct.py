"""What a direct upload saves the web process: CPU per image of presign + commit against a
multipart submit, media on a real SeaweedFS.

    python bench/direct.py                    # PostgreSQL + Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL)
    python bench/direct.py --n 60

In one process, as bench/frontdoor.py measures (the real ASGI application, every
middleware, authentication, throttling, the service, the PostgreSQL insert, the Celery
message to Redis), with ``MEDIA_STORAGE=s3`` on a SeaweedFS this script starts
(bin/storage, loopback ports ``--s3-port`` and the seven from ``--internal-port``):

- ``submit``: ``POST /api/v1/predictions/`` with one photo, multipart (202): the web
  process parses the body, validates and hashes the bytes and PUTs them to the bucket;
- ``direct``: ``POST /api/v1/uploads/`` (presign), the client's PUT straight to SeaweedFS
  over HTTP (not counted: it is not the web process's), then
  ``POST /api/v1/uploads/{id}/commit/`` (HEAD + ranged GET of the header, insert, message).

CPU per image is ``time.process_time`` (every thread of the process) around the web
requests only; both paths alternate in rounds so a busy moment of the machine falls on
both. Also times the storage calls of the commit alone, and what computing the SHA-256 in
the commit (a whole GET and the hash) would add. No worker runs: rows stay pending.
Writes bench/direct.json. Only talks to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from frontdoor import call, cpu_model, git_revision, multipart, scratch_services, setup_django  # noqa: E402

VAR = ROOT / "var" / "bench-direct"


def _put(url: str, headers: dict[str, str], content: bytes) -> None:
    request = urllib.request.Request(url, data=content, method="PUT", headers=headers)  # noqa: S310 - loopback
    with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - the bench's own loopback store
        assert answer.status == 200, answer.status


def _p50(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def storage_calls(photos: list[tuple[str, bytes]], repeats: int) -> dict[str, dict[str, float]]:
    """The commit's storage calls alone (CPU and wall, ms p50), and the SHA-256 option."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from predictions.services.uploads import HEADER_BYTES

    storage: Any = default_storage
    names = [storage.save(f"uploads/bench/{uuid.uuid4().hex}.jpg", ContentFile(c)) for _, c in photos[:repeats]]
    timed: dict[str, tuple[list[float], list[float]]] = {}

    def measure(label: str, work: Any) -> None:
        cpu, wall = time.process_time(), time.perf_counter()
        work()
        entry = timed.setdefault(label, ([], []))
        entry[0].append((time.process_time() - cpu) * 1000)
        entry[1].append((time.perf_counter() - wall) * 1000)

    for name in names:
        measure("presign (local signing, no request)", lambda n=name: storage.presigned_put(
            n, content_type="image/jpeg", size_bytes=1000, expires_seconds=300))  # fmt: skip
        measure(
            f"ranged GET of the first {HEADER_BYTES // 1024} KiB", lambda n=name: storage.read_head(n, HEADER_BYTES)
        )
        measure(
            "whole GET + SHA-256 (the alternative)", lambda n=name: hashlib.sha256(storage.read_bytes(n)).hexdigest()
        )
    for name in names:
        storage.delete(name)
    return {
        label: {"cpu_ms_p50": _p50(cpu), "wall_ms_p50": _p50(wall), "n": len(cpu)}
        for label, (cpu, wall) in timed.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_DIRECT_N", "60")), help="images per path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/imagerec_direct")
    )
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    parser.add_argument("--s3-port", type=int, default=int(os.environ.get("BENCH_S3_PORT", "18336")))
    parser.add_argument("--internal-port", type=int, default=int(os.environ.get("BENCH_S3_INTERNAL_PORT", "19350")))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "direct.json")
    args = parser.parse_args(argv)
    scratch_services(args.database_url, args.redis_url)
    storage_dir = VAR / "seaweedfs"
    shutil.rmtree(storage_dir, ignore_errors=True)
    storage_script = [sys.executable, str(ROOT / "bin" / "storage")]
    subprocess.run(
        [*storage_script, "start", "--dir", str(storage_dir), "--port", str(args.s3_port),
         "--internal-port", str(args.internal_port)], check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        os.environ.update(MEDIA_STORAGE="s3", AWS_S3_ENDPOINT_URL=f"http://127.0.0.1:{args.s3_port}")
        return _run(args)
    finally:
        subprocess.run([*storage_script, "stop", "--dir", str(storage_dir)], check=False)


def large_photos(photos: list[tuple[str, bytes]], count: int) -> list[tuple[str, bytes]]:
    """The photos scaled up to 12 megapixels (4000x3000) with a camera's sensor grain, JPEG
    quality 92: the size of a phone's photo (a smooth upscale alone compresses to ~1 MB)."""
    import io

    import numpy as np
    from PIL import Image

    grain = np.random.default_rng(25)
    out = []
    for name, content in photos[:count]:
        with Image.open(io.BytesIO(content)) as image:
            big = np.asarray(image.convert("RGB").resize((4000, 3000), Image.Resampling.BILINEAR), dtype=np.int16)
        noisy = np.clip(big + grain.normal(0, 6, big.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noisy).save(buffer, "JPEG", quality=92)
        out.append((f"large-{name}", buffer.getvalue()))
    return out


def _run(args: argparse.Namespace) -> int:
    setup_django(args)
    from django.core.asgi import get_asgi_application
    from rest_framework.authtoken.models import Token

    from tests.factories import UserFactory
    from training.photoset import photoset

    app = get_asgi_application()
    user = UserFactory.create(username=f"direct-{uuid.uuid4().hex[:8]}")
    token = Token.objects.create(user=user).key
    photos = [(p.name, p.read_bytes()) for p in photoset(40, ROOT / "var" / "bench" / "frontdoor-photos")]
    started = time.time()
    large = large_photos(photos, 8)
    sets = {
        "photos": asyncio.run(measure_paths(app, token, photos, args.n, args.rounds)),
        "12 MP photos": asyncio.run(measure_paths(app, token, large, max(6, args.n // 3), args.rounds)),
    }
    calls = {"photos": storage_calls(photos, repeats=30), "12 MP photos": storage_calls(large * 3, repeats=24)}
    record = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "revision": git_revision(),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "note": "shared machine (other helpers' test suites ran meanwhile); SeaweedFS on the same cores",
        },
        "sets": sets,
        "storage_calls": calls,
        "seconds": round(time.time() - started, 1),
    }
    print(report(record))
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


async def measure_paths(app: Any, token: str, photos: list[tuple[str, bytes]], n: int, rounds: int) -> dict[str, Any]:
    """Web CPU per image of ``submit`` and ``direct`` over ``photos``, the paths alternating in rounds."""
    counter = iter(range(10**9))
    cpu: dict[str, list[float]] = {"submit": [], "direct": [], "direct: presign": [], "direct: commit": []}
    wall: dict[str, list[float]] = {"client PUT to the store": [], "submit": [], "direct (all three)": []}

    async def submit() -> None:
        name, content = photos[next(counter) % len(photos)]
        body, ctype = multipart([(name, content)], {"top_k": "5"})
        began, cpu_began = time.perf_counter(), time.process_time()
        status, answer = await call(app, "POST", "/api/v1/predictions/", token=token, body=body, content_type=ctype)
        cpu["submit"].append((time.process_time() - cpu_began) * 1000)
        wall["submit"].append((time.perf_counter() - began) * 1000)
        assert status == 202, (status, answer[:300])

    async def direct() -> None:
        name, content = photos[next(counter) % len(photos)]
        ask = json.dumps({"filename": name, "content_type": "image/jpeg", "size": len(content)}).encode()
        began, cpu_began = time.perf_counter(), time.process_time()
        status, answer = await call(
            app, "POST", "/api/v1/uploads/", token=token, body=ask, content_type="application/json"
        )
        presign_cpu = (time.process_time() - cpu_began) * 1000
        assert status == 201, (status, answer[:300])
        upload = json.loads(answer)
        put_began = time.perf_counter()
        _put(upload["url"], upload["headers"], content)  # the client's, not the web process's
        put_ms = (time.perf_counter() - put_began) * 1000
        cpu_began = time.process_time()
        status, answer = await call(app, "POST", f"/api/v1/uploads/{upload['id']}/commit/", token=token)
        commit_cpu = (time.process_time() - cpu_began) * 1000
        assert status == 202, (status, answer[:300])
        cpu["direct: presign"].append(presign_cpu)
        cpu["direct: commit"].append(commit_cpu)
        cpu["direct"].append(presign_cpu + commit_cpu)
        wall["client PUT to the store"].append(put_ms)
        wall["direct (all three)"].append((time.perf_counter() - began) * 1000)

    for _ in range(3):  # warm-up: connections, the presign client, caches
        await submit()
        await direct()
    for series in (*cpu.values(), *wall.values()):
        series.clear()
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for _ in range(per_round):
            await submit()
        for _ in range(per_round):
            await direct()
    sizes = [len(content) for _, content in photos]
    return {
        "photos": {"count": len(photos), "bytes_median": int(statistics.median(sizes))},
        "images_per_path": len(cpu["submit"]),
        "web_cpu_ms_per_image": {
            path: {"mean": round(statistics.fmean(values), 3), "p50": _p50(values)} for path, values in cpu.items()
        },
        "wall_ms_p50": {path: _p50(values) for path, values in wall.items()},
    }


def report(record: dict[str, Any]) -> str:
    lines = [f"{record['machine']['cpu']}, {record['machine']['cores']} cores"]
    for label, measured in record["sets"].items():
        cpu = measured["web_cpu_ms_per_image"]
        lines += [
            f"{label}: {measured['images_per_path']} images per path, "
            f"{measured['photos']['bytes_median'] / 1024:.0f} KiB (median)",
            f"  {'web CPU per image':<26} {'mean ms':>9} {'p50 ms':>9}",
        ]
        lines += [f"  {path:<26} {v['mean']:>9.3f} {v['p50']:>9.3f}" for path, v in cpu.items()]
        saved = cpu["submit"]["mean"] - cpu["direct"]["mean"]
        lines.append(f"  saved per image: {saved:.3f} ms of web CPU ({saved / cpu['submit']['mean']:.0%})")
        lines.append(f"  wall p50 ms: {json.dumps(measured['wall_ms_p50'])}")
    for label, calls in record["storage_calls"].items():
        lines.append(f"storage calls, {label} (p50 ms):")
        lines += [f"  {call}: {json.dumps(v)}" for call, v in calls.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
