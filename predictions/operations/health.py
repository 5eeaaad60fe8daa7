"""Readiness checks (database, broker, workers, model) and the broker queue depth.

Each check returns a ``CheckResult``; none raises, and the broker ones give up after
``HEALTH_BROKER_TIMEOUT_SECONDS`` so a dead Redis cannot hang a probe.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from kombu import Connection
from kombu.exceptions import ChannelError, KombuError

from predictions.models import WorkerHeartbeat
from predictions.operations import selectors as operations_selectors
from predictions.registry import distribution
from predictions.registry import selectors as registry_selectors

INFERENCE_QUEUE = "inference"
# What a broker outage looks like from kombu/redis-py: connection refused, timeouts, DNS.
BROKER_ERRORS = (KombuError, OSError, ChannelError, TimeoutError)


@dataclass
class CheckResult:
    name: str
    ok: bool
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **self.detail}


def readiness_checks() -> list[CheckResult]:
    """All readiness checks, in the order a request would need them."""
    return [check_database(), check_broker(), check_workers(), check_model()]


def check_database() -> CheckResult:
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as error:
        return CheckResult("database", False, {"error": _describe(error)})
    return CheckResult("database", True, {"vendor": connection.vendor, "ms": _ms_since(started)})


def broker_connection() -> Connection:
    """A short-timeout connection to the Celery broker (not the app's pool)."""
    timeout = settings.HEALTH_BROKER_TIMEOUT_SECONDS
    options = {
        **settings.CELERY_BROKER_TRANSPORT_OPTIONS,
        "max_retries": 0,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    url = settings.CELERY_BROKER_URL
    # The filesystem broker through the app's own transport (imagerec.broker), as Celery
    # uses it: its channel makes the folders.
    transport = getattr(settings, "CELERY_BROKER_TRANSPORT", None) if url.startswith("filesystem") else None
    return Connection(url, transport=transport, connect_timeout=timeout, transport_options=options)


def check_broker() -> CheckResult:
    started = time.perf_counter()
    timeout = settings.HEALTH_BROKER_TIMEOUT_SECONDS
    try:
        with broker_connection() as broker:
            broker.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout)
            transport = broker.transport.driver_type
            if transport == "filesystem":
                broker.default_channel  # noqa: B018 - a channel makes its folders, as the first message would
                _check_broker_folders()
    except BROKER_ERRORS as error:
        return CheckResult("broker", False, {"error": _describe(error), "ms": _ms_since(started)})
    return CheckResult("broker", True, {"transport": transport, "ms": _ms_since(started)})


def _check_broker_folders() -> None:
    # The filesystem "broker" always connects; what can fail is its folders.
    options = settings.CELERY_BROKER_TRANSPORT_OPTIONS
    for key in ("data_folder_in", "data_folder_out"):
        folder = Path(options.get(key, ""))
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise OSError(f"broker folder {key} is missing or not writable")


def broker_queue_depth(queue: str = INFERENCE_QUEUE) -> int | None:
    """Messages waiting in ``queue`` (Redis LLEN, files for the filesystem transport);
    ``None`` when the broker cannot be reached within the timeout."""
    try:
        with broker_connection() as broker:
            broker.ensure_connection(
                max_retries=1,
                interval_start=0,
                interval_step=0,
                timeout=settings.HEALTH_BROKER_TIMEOUT_SECONDS,
            )
            channel = broker.default_channel
            try:
                # Every transport's channel declares queues; kombu's StdChannel, the declared
                # type of default_channel, does not say so.
                declared = channel.queue_declare(queue=queue, passive=True)  # type: ignore[attr-defined]
                return int(declared.message_count)
            except ChannelError:
                return 0  # never declared (or emptied and deleted by Redis): nothing waiting
    except BROKER_ERRORS:
        return None


def check_workers() -> CheckResult:
    """Ready when a worker consuming the inference queue, with its model loaded, has
    sent a heartbeat within ``WORKER_HEARTBEAT_MAX_AGE_SECONDS``. Other fresh workers
    (the maintenance worker, one still warming up) are listed with the reason."""
    max_age = settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS
    try:
        workers = operations_selectors.worker_heartbeat_list_fresh(max_age_seconds=max_age)
    except DatabaseError as error:
        return CheckResult("workers", False, {"error": _describe(error)})
    reasons = {worker.hostname: _not_serving_reason(worker) for worker in workers}
    serving = [hostname for hostname, reason in reasons.items() if not reason]
    not_serving = {hostname: reason for hostname, reason in reasons.items() if reason}
    detail: dict[str, Any] = {
        "count": len(serving),
        "max_age_seconds": max_age,
        "workers": serving,
        "hosts": worker_hosts(workers),
    }
    if not_serving:
        detail["not_serving"] = not_serving
    if not serving:
        detail["error"] = (
            f"no worker consuming the {INFERENCE_QUEUE!r} queue with its model loaded has sent a heartbeat "
            f"in the last {max_age} s" + "".join(f"; {hostname} {reason}" for hostname, reason in not_serving.items())
        )
    return CheckResult("workers", bool(serving), detail)


def worker_hosts(workers: list[WorkerHeartbeat]) -> dict[str, dict[str, Any]]:
    """The answering workers grouped by host: each host's workers (node names), how many
    of them serve the inference queue, and the model versions it holds in memory."""
    hosts: dict[str, dict[str, Any]] = {}
    for worker in workers:
        host = hosts.setdefault(worker.host, {"workers": [], "serving": 0, "models": []})
        host["workers"].append(worker.hostname)
        host["serving"] += not _not_serving_reason(worker)
        host["models"] += [name for name in worker.models if name not in host["models"]]
    return hosts


def _not_serving_reason(worker: WorkerHeartbeat) -> str:
    """Why a fresh worker cannot classify an image now; empty when it can."""
    if INFERENCE_QUEUE not in worker.queues:
        return f"does not consume the {INFERENCE_QUEUE!r} queue (consumes: {', '.join(worker.queues) or 'none'})"
    if not worker.model_loaded:
        return f"model not loaded yet: {worker.model_error or 'warming up'}"
    return ""


def check_model() -> CheckResult:
    try:
        active = registry_selectors.model_version_active()
    except DatabaseError as error:
        return CheckResult("model", False, {"error": _describe(error)})
    if active is None:
        return CheckResult("model", False, {"error": "no active model version"})
    if settings.MODEL_DISTRIBUTION:  # workers fetch it from the bucket: this host needs no files
        if not distribution.published_sha256(active):
            return CheckResult("model", False, {"model": f"{active.name}:{active.version}", "error": "not published"})
    elif not (Path(active.path) / "metadata.json").exists():
        return CheckResult("model", False, {"model": f"{active.name}:{active.version}", "error": "model files missing"})
    return CheckResult("model", True, {"model": f"{active.name}:{active.version}"})


def _describe(error: BaseException) -> str:
    # The class and message only: enough to act on, no URLs with credentials.
    return f"{type(error).__name__}: {str(error)[:200]}"


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
