"""Worker hosts join and leave: a web host and worker hosts, each in its own network and
mount namespaces (tests/multihost/hosts.py), with PostgreSQL, Redis and the object store
reached over TCP only. Real photos go in through the API; a worker host is SIGKILLed
mid-batch, a third joins (one command, nothing restarted), the second leaves; every image
is classified exactly once and nothing is lost, and no host reads a file of another's disk.

The model is published to the bucket once (register_model, from the root namespace, where
it was built); every worker host fetches and verifies it into its own cache.

Run with `make multihost` (CI runs it in the PostgreSQL + Redis pass); it needs root.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from rest_framework.authtoken.models import Token

from predictions.models import Prediction, PredictionStatus, WorkerHeartbeat
from tests.conftest import BASE_DIR, CAT_CLASSES, _compose_web_command, _database_url, photo_bytes
from tests.multihost.hosts import Forwarder, Host, hosts_unavailable, wait_until
from tests.seaweedfs import S3Server
from training.test_photos import TEST_PHOTOS

pytestmark = [pytest.mark.slow, pytest.mark.multihost, pytest.mark.django_db(transaction=True)]

WAVE = 16  # photos per wave: two while w1 dies, one while w3 joins, one after w2 left
WEB_PORT = 8000  # inside the web host's namespace
METRICS_TOKEN = "multihost-probe"
# The one command that adds a worker host (docs/scaling.md): the same install, the same
# environment, its own node name from its hostname.
WORKER_COMMAND = [
    sys.executable, "-m", "celery", "-A", "imagerec", "worker", "--pool=prefork", "--concurrency=1", "-Q", "inference",
    "-n", "inference@%h", "--loglevel=INFO", "--without-gossip", "--without-mingle",
]  # fmt: skip
CLAIM_LINE = re.compile(r"claimed \d+ under claim=([0-9a-f-]+)")
BATCH_LINE = re.compile(r"batch size=(\d+) succeeded=(\d+) failed=(\d+)")


def _why_not_here() -> str:
    if not settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return "needs PostgreSQL (DATABASE_URL=postgres://...): SQLite is a file on one host's disk"
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        return "needs Redis (CELERY_BROKER_URL=redis://...): the filesystem broker cannot be shared across hosts"
    return hosts_unavailable()


@pytest.fixture(scope="session")
def hosts_possible() -> None:
    """Skip, saying why, before any server is started for nothing (session-scoped, so it
    comes before the session's SeaweedFS)."""
    reason = _why_not_here()
    if reason:
        pytest.skip(f"multi-host test: {reason}")


@pytest.fixture
def cluster(hosts_possible: None, tmp_path: Path, model_dir: Path, seaweedfs: S3Server) -> Iterator[dict[str, Any]]:
    host_dir = tmp_path / "host"  # every host mounts its own tmpfs here: the root sees it empty
    host_dir.mkdir()
    broker = settings.CELERY_BROKER_URL
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": broker,
        "CACHE_URL": broker,
        "MEDIA_ROOT": str(host_dir / "media"),  # each host's own, empty: media are in the bucket
        **seaweedfs.env(),
        "MODEL_DIR": str(host_dir / "models"),
        "VAR_DIR": str(host_dir / "var"),
        "PROMETHEUS_MULTIPROC_DIR": str(host_dir / "var"),
        "METRICS_TOKEN": METRICS_TOKEN,
        "RESULT_CACHE": "off",  # every upload is classified, none answered from an earlier result
        "THROTTLE_SUBMIT": "10000/min",
        "INFERENCE_BATCH_SIZE": "4",
        "WORKER_HEARTBEAT_INTERVAL_SECONDS": "2",
        "WORKER_HEARTBEAT_MAX_AGE_SECONDS": "10",
        "RECONCILE_AFTER_SECONDS": "20",
        # Reconciling must wait longer than a task may run (system check predictions.E001).
        "CELERY_TASK_TIME_LIMIT": "18",
        "CELERY_TASK_SOFT_TIME_LIMIT": "15",
        "RECONCILE_INTERVAL_SECONDS": "3",
        "CELERY_VISIBILITY_TIMEOUT": "40",
        "PYTHONPATH": str(BASE_DIR),
    }
    services = [int(settings.DATABASES["default"]["PORT"] or 5432), _port(broker), _port(seaweedfs.endpoint)]
    made: list[Host] = []

    def host(name: str) -> Host:
        made.append(Host(name, host_dir=host_dir, log_dir=tmp_path, env=env, services=services))
        return made[-1]

    # The operator publishes the model to the bucket from where it was built (this machine's
    # root namespace); no host has the model files: workers fetch them from the bucket.
    published = subprocess.run(
        [sys.executable, "manage.py", "register_model", str(model_dir), "--activate"],
        cwd=BASE_DIR, env={**env, "VAR_DIR": str(tmp_path / "operator"), "PROMETHEUS_MULTIPROC_DIR": ""},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert published.returncode == 0, published.stdout + published.stderr
    in_base_dir = f"cd {shlex.quote(str(BASE_DIR))}"
    web = host("web")
    web.start(
        [
            _compose_web_command(WEB_PORT),
            # The reconciler (beat) and the maintenance queue, beside the web server.
            [
                *WORKER_COMMAND[:9],
                "maintenance,celery",
                "--beat",
                "--schedule",
                str(host_dir / "var" / "beat"),
                "-n",
                "maintenance@%h",
                *WORKER_COMMAND[12:],
            ],
        ],
        setup=in_base_dir,
    )
    entry = Forwarder(listen_ns=None, listen_port=0, target_ns=web.namespace, target_port=WEB_PORT)
    try:
        yield {
            "web": web,
            "base": f"http://127.0.0.1:{entry.port}",
            "host": host,
            "start_worker": lambda h: h.start([WORKER_COMMAND], setup=in_base_dir),
            "host_dir": host_dir,
        }
    finally:
        entry.close()
        for made_host in made:
            made_host.destroy()


def _port(url: str) -> int:
    match = re.search(r":(\d+)(/|$)", url.split("@")[-1])
    return int(match.group(1)) if match else 6379


def _serving_hosts() -> set[str]:
    return {w.host for w in WorkerHeartbeat.objects.filter(model_loaded=True) if "inference" in w.queues}


def _log_counts(host: Host) -> tuple[int, int]:
    """Tasks received and finished so far in the host's log."""
    log = host.log()
    return log.count("] received"), len(re.findall(r"\] (succeeded in|retry:|raised)", log))


def _classified(host: Host) -> int:
    """Predictions this host stored a result for (its batch log lines)."""
    return sum(int(match.group(2)) + int(match.group(3)) for match in BATCH_LINE.finditer(host.log()))


def _submit(base: str, token: str, count: int, offset: int, concurrency: int = 1) -> list[str]:
    """Post ``count`` real photos through the API (``concurrency`` at a time); their ids."""

    def post(index: int) -> str:
        photo = TEST_PHOTOS[index % len(TEST_PHOTOS)]
        response = requests.post(
            f"{base}/api/v1/predictions/",
            headers={"Authorization": f"Token {token}"},
            files={"image": (f"{photo.name}-{index}.jpg", photo_bytes(photo.name), "image/jpeg")},
            timeout=30,
        )
        assert response.status_code == 202, response.text
        return str(response.json()["id"])

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(post, range(offset, offset + count)))


def _ready(base: str) -> dict[str, Any]:
    response = requests.get(f"{base}/health/ready", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=15)
    body: dict[str, Any] = response.json()
    return body


def test_a_worker_host_killed_mid_batch_and_one_added_lose_nothing_and_classify_each_image_once(
    cluster: dict[str, Any], django_user_model: type[User]
) -> None:
    base, web = cluster["base"], cluster["web"]
    w1, w2 = cluster["host"]("w1"), cluster["host"]("w2")
    cluster["start_worker"](w1)
    cluster["start_worker"](w2)
    user = django_user_model.objects.create_user("multihost", password="multihost-password-1")
    token = Token.objects.create(user=user).key

    def up() -> bool:
        try:
            return requests.get(f"{base}/health/live", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up, timeout=180, what=f"the web host\n{web.log()[-3000:]}")
    wait_until(lambda: _serving_hosts() >= {"w1", "w2"}, timeout=300, what="worker hosts w1 and w2 to load the model")
    ready = _ready(base)
    assert ready["status"] == "ok", ready
    assert set(ready["checks"]["workers"]["hosts"]) == {"w1", "w2", "web"}
    assert ready["checks"]["workers"]["hosts"]["w1"]["models"] == ["efficientnet_lite0:1"]

    # SIGKILL w1's whole process tree while it is in the middle of a batch, as photos arrive.
    killed: dict[str, Any] = {}

    def kill_w1_mid_batch() -> None:
        tried: set[str] = set()

        def mid_batch() -> bool:
            # w1 logs "claimed N under claim=<token>" once it holds rows, "batch size=..." once stored.
            log = w1.log()
            claims = CLAIM_LINE.findall(log)
            if len(claims) > len(BATCH_LINE.findall(log)) and claims[-1] not in tried:
                killed["claim"] = claims[-1]
                return True
            return False

        try:
            while "ids" not in killed:
                wait_until(mid_batch, timeout=240, what="w1 to be in the middle of a batch", every=0.002, log=w1.log)
                tried.add(killed["claim"])
                w1.signal(signal.SIGSTOP)  # frozen: does it still hold rows it has not stored?
                held = Prediction.objects.filter(claim=killed["claim"], status=PredictionStatus.RUNNING)
                if held.exists():
                    killed["ids"] = {str(i) for i in held.values_list("id", flat=True)}
                    w1.kill()
                else:  # it stored that batch just before it was frozen: wait for its next one
                    w1.signal(signal.SIGCONT)
        finally:
            connection.close()  # this thread's own connection

    killer = threading.Thread(target=kill_w1_mid_batch)
    killer.start()
    ids = _submit(base, token, 2 * WAVE, 0, concurrency=4)
    killer.join(timeout=300)
    assert "ids" in killed, "w1 was never seen in the middle of a batch"
    killed_ids = killed["ids"]

    # A third host joins: one command, nothing else restarted; work goes on meanwhile.
    w3 = cluster["host"]("w3")
    cluster["start_worker"](w3)
    ids += _submit(base, token, WAVE, 2 * WAVE)
    wait_until(lambda: "w3" in _serving_hosts(), timeout=300, what="w3 to load the model")
    # w2 leaves gracefully (SIGTERM: it finishes its task); only w3 is left to classify.
    w2.terminate()
    ids += _submit(base, token, WAVE, 3 * WAVE)

    unfinished = Prediction.objects.exclude(status__in=[PredictionStatus.SUCCEEDED, PredictionStatus.FAILED])
    wait_until(lambda: not unfinished.exists(), timeout=600, what="every prediction to be final")

    predictions = list(Prediction.objects.filter(id__in=ids))
    assert len(predictions) == 4 * WAVE
    assert {p.status for p in predictions} == {PredictionStatus.SUCCEEDED}, [(p.id, p.error) for p in predictions]
    assert all(p.class_id in CAT_CLASSES for p in predictions if str(p.image.name).split("/")[-1].startswith("chelsea"))
    # The batch w1 was killed in was claimed again by another host, and classified there.
    lost_batch = [p for p in predictions if str(p.id) in killed_ids]
    assert lost_batch
    assert all(p.attempts >= 2 for p in lost_batch), [(p.id, p.attempts) for p in lost_batch]
    # Exactly once: the results the hosts stored add up to the images, none twice. (A host
    # logs its batch just after storing it: give the last line a moment to be written.)
    workers = (w1, w2, w3)
    wait_until(lambda: sum(_classified(h) for h in workers) >= 4 * WAVE, timeout=30, what="the last batch lines")
    time.sleep(1)
    per_host = {host.name: _classified(host) for host in workers}
    print(
        f"\nmulti-host: {4 * WAVE} photos, results stored per host {per_host}; in w1's batch at the kill "
        f"{len(lost_batch)}, claimed more than once {sum(p.attempts > 1 for p in predictions)}"
    )
    assert sum(per_host.values()) == 4 * WAVE, per_host
    assert per_host["w3"] >= WAVE  # it took work at once, and all of the last wave

    # Readiness and the stats follow the hosts: w2 left at once, w1's heartbeat aged out.
    wait_until(lambda: set(_ready(base)["checks"]["workers"]["hosts"]) == {"w3", "web"}, timeout=60,
               what="readiness to show the hosts now answering")  # fmt: skip
    hosts = _ready(base)["checks"]["workers"]["hosts"]
    assert hosts["w3"]["serving"] == 1
    assert hosts["w3"]["models"] == ["efficientnet_lite0:1"]
    assert hosts["web"]["serving"] == 0  # the maintenance worker never loads the model

    # No host's disk is another's: the root sees none of what the hosts wrote; no host kept an
    # upload on its disk (the web host put them in the bucket, the workers read them there);
    # the model reached w3 only through the bucket, into its own cache, and the web host has none.
    host_dir = cluster["host_dir"]
    assert list(host_dir.iterdir()) == []
    for host in (web, w3):
        assert host.run(["find", str(host_dir / "media"), "-type", "f"]).strip() == ""
    assert web.run(["find", str(host_dir / "models"), str(host_dir / "var"), "-name", "*.pb"]).strip() == ""
    fetched = w3.run(["find", str(host_dir / "var" / "model-cache"), "-name", "saved_model.pb"]).split()
    assert len(fetched) == 1, fetched
    assert w3.run(["find", str(host_dir / "models"), "-type", "f"]).strip() == ""
