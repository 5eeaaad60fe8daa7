"""Throughput with one and two worker hosts (issue 21): `make bench-hosts`.

    python bench/hosts.py --out bench/hosts.json        # BENCH_HOSTS_N=192 photos per run

Each host is a network + mount namespace made here (tests/multihost/hosts.py, the harness of
the multi-host test): its own empty tmpfs for media, model files and var; PostgreSQL, Redis
and SeaweedFS reached over TCP through loopback forwarders; media in the S3 bucket, and the
model too (published once with register_model; each worker host fetches it into its cache).

How it is measured on a 2-core machine:
- each worker host is pinned with taskset to its own core (host 1 to CPU 0, host 2 to
  CPU 1; the one-host run uses CPU 0) and runs TensorFlow on one thread (MODEL_THREADS=1);
- the queue is pre-filled: once every worker host has its model loaded, the worker hosts
  are stopped (SIGSTOP to each host's process group), N real photos are posted through the
  web host's API, then the hosts are resumed (SIGCONT); throughput is N over the time from
  the resume to the last ``completed_at``. The web host (gunicorn, beat) works only while
  the workers are stopped, so it is not pinned;
- PostgreSQL, Redis, SeaweedFS and the forwarders (threads of this process) are not pinned
  either: they share both cores with the worker hosts, as a real deployment's network and
  database would not. On a shared machine (other work running) the figures are noisy.

Needs root, PostgreSQL on 127.0.0.1:5432 (creates and drops database imagerec_bench_hosts)
and Redis (BENCH_REDIS_URL, default redis://127.0.0.1:6379/13, flushed first).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

DATABASE = "imagerec_bench_hosts"
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
os.environ["DATABASE_URL"] = f"postgres://root@127.0.0.1:5432/{DATABASE}"
os.environ["CELERY_BROKER_URL"] = REDIS_URL
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings")

from e2e import machine_info  # noqa: E402 - bench/e2e.py: CPU model, flags, memory

from tests.multihost.hosts import Forwarder, Host, hosts_unavailable, wait_until  # noqa: E402
from tests.seaweedfs import seaweedfs_server  # noqa: E402

WEB_PORT = 8000
WORKER = [
    sys.executable, "-m", "celery", "-A", "imagerec", "worker", "--pool=prefork", "--concurrency=1", "-Q", "inference",
    "-n", "inference@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle",
]  # fmt: skip


def _host_env(host_dir: Path, s3: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "CACHE_URL": REDIS_URL,
        "MEDIA_ROOT": str(host_dir / "media"),
        "MODEL_DIR": str(host_dir / "models"),
        "VAR_DIR": str(host_dir / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(host_dir / "var"),
        "RESULT_CACHE": "off",
        "THROTTLE_SUBMIT": "100000/min",
        "MODEL_THREADS": "1",
        "WORKER_HEARTBEAT_INTERVAL_SECONDS": "2",
        "PYTHONPATH": str(ROOT),
        **s3,
    }


def _photos(count: int) -> list[tuple[str, bytes]]:
    from tests.conftest import photo_bytes
    from training.test_photos import TEST_PHOTOS

    encoded = {photo.name: photo_bytes(photo.name) for photo in TEST_PHOTOS}
    names = sorted(encoded)
    return [(f"{names[i % len(names)]}-{i}.jpg", encoded[names[i % len(names)]]) for i in range(count)]


def _post_all(base: str, token: str, photos: list[tuple[str, bytes]]) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    import requests

    def post(photo: tuple[str, bytes]) -> str:
        response = requests.post(
            f"{base}/api/v1/predictions/", headers={"Authorization": f"Token {token}"},
            files={"image": (photo[0], photo[1], "image/jpeg")}, timeout=60,
        )  # fmt: skip
        response.raise_for_status()
        return str(response.json()["id"])

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(post, photos))


def _cpu_seconds(hosts: list[Host]) -> float:
    """CPU time (user + system) used so far by every process of the worker hosts."""
    import psutil

    total = 0.0
    for host in hosts:
        assert host.process is not None
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(host.process.pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    total += times.user + times.system
    return total


def _signal_hosts(hosts: list[Host], signum: int) -> None:
    for host in hosts:
        host.signal(signum)


def run_hosts(count: int, *, n: int, base: str, token: str, make_host: Any, setup: str) -> dict[str, Any]:
    """One run: ``count`` worker hosts, each pinned to its own core, on a pre-filled queue."""
    from predictions.models import Prediction, PredictionStatus, WorkerHeartbeat

    hosts = [make_host(f"bench{count}-w{index + 1}") for index in range(count)]
    try:
        for index, host in enumerate(hosts):
            host.start([WORKER], setup=setup, cpus=str(index))
        names = {host.name for host in hosts}
        wait_until(
            lambda: {w.host for w in WorkerHeartbeat.objects.filter(model_loaded=True)} >= names,
            timeout=600, what=f"{count} worker host(s) to load the model", log=hosts[0].log,
        )  # fmt: skip
        _signal_hosts(hosts, signal.SIGSTOP)
        load_before = [round(value, 2) for value in os.getloadavg()]
        ids = _post_all(base, token, _photos(n))
        cpu_before = _cpu_seconds(hosts)
        resumed = datetime.now(UTC)
        began = time.monotonic()
        _signal_hosts(hosts, signal.SIGCONT)
        rows = Prediction.objects.filter(id__in=ids)
        wait_until(lambda: not rows.exclude(status=PredictionStatus.SUCCEEDED).exists(), timeout=900,
                   what="every photo to be classified", every=0.1, log=hosts[0].log)  # fmt: skip
        waited = time.monotonic() - began
        cpu = _cpu_seconds(hosts) - cpu_before
        last = max(row.completed_at for row in rows if row.completed_at is not None)
        seconds = (last - resumed).total_seconds()

        def per_host() -> dict[str, int]:
            line = r"batch size=\d+ succeeded=(\d+)"
            return {host.name: sum(int(m.group(1)) for m in re.finditer(line, host.log())) for host in hosts}

        with contextlib.suppress(AssertionError):  # a host logs its batch just after storing it
            wait_until(lambda: sum(per_host().values()) >= n, timeout=10, what="the last batch lines")
        return {
            "worker_hosts": count,
            "images": n,
            "seconds": round(seconds, 3),
            "images_per_second": round(n / seconds, 2),
            "waited_seconds": round(waited, 3),
            # What the worker hosts used: flat from one host to two means they do not slow each
            # other down; what they did not get of their cores went to the rest of the machine.
            "worker_cpu_seconds_per_image": round(cpu / n, 4),
            "worker_cpu_share_of_their_cores": round(cpu / (waited * count), 3),
            "cores": [str(index) for index in range(count)],
            "classified_per_host": per_host(),
            "load_average_before": load_before,
        }
    finally:
        for host in hosts:
            with contextlib.suppress(Exception):
                host.destroy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=int(os.environ.get("BENCH_HOSTS_N", "192")))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "hosts.json")
    args = parser.parse_args()
    import django

    django.setup()  # settings from the environment set above; the database is used once migrated
    reason = hosts_unavailable()
    if reason:
        print(f"bench-hosts: {reason}", file=sys.stderr)
        return 2
    subprocess.run(["redis-cli", "-u", REDIS_URL, "flushdb"], check=True, capture_output=True)
    subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "root", "--if-exists", DATABASE], check=True)
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "root", DATABASE], check=True)
    work = Path(tempfile.mkdtemp(prefix="imagerec-bench-hosts-"))
    host_dir = work / "host"
    host_dir.mkdir()
    model = ROOT / "models" / "efficientnet_lite0" / "1"
    in_root = f"cd {shlex.quote(str(ROOT))}"
    made: list[Host] = []
    storage = seaweedfs_server(work / "seaweedfs")
    server = next(storage)
    try:
        env = _host_env(host_dir, server.env())
        ports = [5432, int(REDIS_URL.rsplit(":", 1)[1].split("/")[0]), int(server.endpoint.rsplit(":", 1)[1])]

        def make_host(name: str) -> Host:
            made.append(Host(name, host_dir=host_dir, log_dir=work, env=env, services=ports))
            return made[-1]

        # The operator's side: migrate, publish the model to the bucket (no host has its files).
        operator = {**env, "VAR_DIR": str(work / "operator"), "PROMETHEUS_MULTIPROC_DIR": ""}
        for step in (["migrate", "--noinput", "-v", "0"], ["register_model", str(model), "--activate"]):
            subprocess.run([sys.executable, "manage.py", *step], cwd=ROOT, env=operator, check=True)
        web = make_host("bench-web")
        from tests.conftest import _compose_web_command

        web.start([_compose_web_command(WEB_PORT)], setup=in_root)
        entry = Forwarder(listen_ns=None, listen_port=0, target_ns=web.namespace, target_port=WEB_PORT)
        base = f"http://127.0.0.1:{entry.port}"
        import requests

        def web_up() -> bool:
            with contextlib.suppress(requests.RequestException):
                return requests.get(f"{base}/health/live", timeout=5).status_code == 200
            return False

        wait_until(web_up, timeout=300, what="the web host", log=web.log)
        from django.contrib.auth.models import User
        from rest_framework.authtoken.models import Token

        user = User.objects.create_user("bench-hosts")  # a token user: no password
        token = Token.objects.create(user=user).key
        runs = [run_hosts(count, n=args.n, base=base, token=token, make_host=make_host, setup=in_root)
                for count in (1, 2)]  # fmt: skip
        entry.close()
    finally:
        for host in made:
            host.destroy()
        with contextlib.suppress(StopIteration):
            next(storage)
        from django.db import connections

        connections.close_all()
        subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "root", "--if-exists", "--force", DATABASE], check=False)
    speedup = runs[1]["images_per_second"] / runs[0]["images_per_second"]
    # Two hosts' throughput if each had all of its core, from the CPU each image cost them.
    cpu_bound = 2 * runs[0]["worker_cpu_seconds_per_image"] / runs[1]["worker_cpu_seconds_per_image"]
    machine = machine_info()
    result = {
        "benchmark": "worker hosts: throughput with one and two worker hosts, queue pre-filled",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine,
        "shared_machine_note": "taken on a shared 2-core machine with other jobs running: figures are noisy",
        "method": "each worker host pinned (taskset) to its own core, MODEL_THREADS=1; hosts stopped while the "
        "queue is filled through the API, then resumed; time from resume to the last completed_at; "
        "PostgreSQL, Redis, SeaweedFS, the web host and the forwarders unpinned",
        "runs": runs,
        "speedup_two_hosts": round(speedup, 3),
        "speedup_two_hosts_cpu_bound": round(cpu_bound, 3),
        "goal": ">= 1.8",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nworker hosts on {machine['cpu_model']} ({machine['cores']} cores), {args.n} photos per run:")
    for run in runs:
        print(
            f"  {run['worker_hosts']} host(s): {run['images_per_second']:.1f} images/s ({run['seconds']:.1f} s), "
            f"{run['worker_cpu_seconds_per_image'] * 1000:.0f} worker CPU ms per image, "
            f"{run['worker_cpu_share_of_their_cores']:.0%} of their cores"
        )
    print(f"  two hosts / one host: {speedup:.2f}x (goal >= 1.8x); with all of each core: {cpu_bound:.2f}x")
    print(f"  written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
