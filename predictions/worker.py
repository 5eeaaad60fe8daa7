"""The Celery worker's life cycle: model warm-up, the heartbeat, connection checks.

``install()`` connects it to Celery's signals; ``imagerec.celery`` calls it in the
worker's main process once the worker has set Django up (nothing else imports this
module, and importing it connects nothing). Workers run the prefork pool with one child per worker
(``--pool=prefork -c 1``): the parent never imports TensorFlow (forking a process that
has it loaded deadlocks), and since a child can be killed and re-forked by the parent,
Celery's time limits are enforced. Each pool child, when it starts:

- finds the queues its worker consumes (``-Q``);
- loads and warms up the active model, only when one of them is the inference queue
  (the maintenance worker never loads it);
- writes its heartbeat (queues, the versions loaded or why none is) and refreshes it
  from a daemon thread, which also retries a warm-up that failed (the database not
  migrated yet, the model files not copied yet) until it succeeds, loads a newly
  activated version, and releases from memory every version no longer in use (neither
  active nor the A/B candidate; a batch running with it finishes first, as it holds it).

Readiness (``health.check_workers``) counts a worker only once it consumes the
inference queue with its model loaded.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

from celery import current_app
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_process_shutdown
from django.conf import settings
from django.core.checks import run_checks
from django.db import DatabaseError, close_old_connections, connections
from django.utils import timezone

from .exceptions import ApplicationError
from .operations import services as operations_services
from .operations.health import INFERENCE_QUEUE
from .registry import runtime
from .registry import selectors as registry_selectors

logger = logging.getLogger(__name__)


# The Celery node name of this worker (``-n``/``--hostname``, default ``celery@%h``), set by
# ``install()`` in the worker's main process before the pool forks; its children inherit it.
_node: dict[str, str] = {"name": ""}


def worker_node_name() -> str:
    """This worker's unique name in heartbeats: its Celery node name (``name@host``) and the
    pool parent's pid, so two workers started with the same ``-n`` on one host (or a worker
    restarted before its old heartbeat aged out) never share a row. The part after ``@`` is
    the host, as readiness and the stats group workers by it."""
    node = _node["name"] or f"celery@{socket.gethostname()}"
    return f"{node}:{os.getppid()}"


def consumed_queues() -> list[str]:
    """Names of the queues this worker consumes.

    The worker selects its ``-Q`` queues on the app (``amqp.queues.consume_from``)
    before it forks the pool, so a pool child sees the same selection; without ``-Q``
    it is the default queue.
    """
    return sorted(current_app.amqp.queues.consume_from)


class HeartbeatThread(threading.Thread):
    """This pool child's heartbeat: a daemon thread that refreshes the row every
    ``WORKER_HEARTBEAT_INTERVAL_SECONDS`` and, for an inference worker, keeps the active
    model loaded (warming it up after a start or a switch) and only the versions in use."""

    def __init__(self, *, hostname: str, queues: Iterable[str]) -> None:
        super().__init__(name="worker-heartbeat", daemon=True)
        self.hostname = hostname
        self.queues = sorted(queues)
        self.wants_model = INFERENCE_QUEUE in self.queues
        self.started_at = timezone.now()
        self.stopped = threading.Event()
        self.model_loaded = False
        self.model_version = ""
        self.model_load_seconds: float | None = None
        self.model_error = "" if self.wants_model else f"not loaded: this worker does not consume {INFERENCE_QUEUE!r}"

    def warm_up(self) -> bool:
        """Load and warm up the active model in this process; ``False`` (and the reason
        in ``model_error``) when the database or the model files are not there yet."""
        try:
            model_version = registry_selectors.model_version_active_get()
            classifier = runtime.classifier_for(model_version=model_version)
        except ApplicationError as error:
            self.model_loaded = False  # the active version cannot be loaded: this worker cannot serve
            self.model_error = error.message
        except DatabaseError as error:
            self.model_error = f"database: {type(error).__name__}: {str(error)[:200]}"
        else:
            self.model_loaded = True
            self.model_version = f"{model_version.name}:{model_version.version}"
            self.model_load_seconds = classifier.load_seconds
            self.model_error = ""
            return True
        logger.warning("Model not warmed up (retried every heartbeat): %s", self.model_error)
        return False

    def release_unused(self) -> None:
        """Release the loaded versions no longer in use; the heartbeat then names the ones
        still loaded (``model_version``: the active one first, then the A/B candidate)."""
        try:
            loaded = runtime.model_version_release_unused()
        except DatabaseError as error:
            logger.warning("Unused models not released (retried next heartbeat): %s", error)
            return
        if loaded:
            self.model_version = ", ".join(loaded)

    def beat(self) -> None:
        """Make sure the active model is loaded (a cache hit unless it was just switched),
        release the versions no longer in use, then write the heartbeat; never raises for
        the database."""
        if self.wants_model and self.warm_up():
            self.release_unused()
        try:
            operations_services.worker_heartbeat_record(
                hostname=self.hostname,
                started_at=self.started_at,
                queues=self.queues,
                model_loaded=self.model_loaded,
                model_version=self.model_version,
                model_load_seconds=self.model_load_seconds,
                model_error=self.model_error,
            )
        except DatabaseError as error:
            # A database blip must not kill the worker; readiness will notice the gap.
            logger.warning("Worker heartbeat not written: %s", error)

    def run(self) -> None:
        while not self.stopped.wait(settings.WORKER_HEARTBEAT_INTERVAL_SECONDS):
            self.beat()
            connections.close_all()  # this thread's own connections: no idle ones left open

    def stop(self) -> None:
        self.stopped.set()
        try:
            operations_services.worker_heartbeat_remove(hostname=self.hostname)
        except DatabaseError as error:
            logger.warning("Worker heartbeat not removed: %s", error)


# The running heartbeat of this pool child, kept so shutdown can stop it.
_heartbeats: list[HeartbeatThread] = []


class FinishedIds:
    """Ids this worker process finished lately. A prediction classified as part of an
    earlier batch still has its own message in the queue; when that message arrives it
    is answered from here, without a query."""

    def __init__(self, size: int = 4096) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._size = size

    def add(self, ids: Iterable[object]) -> None:
        for prediction_id in ids:
            self._ids[str(prediction_id)] = None
        while len(self._ids) > self._size:
            self._ids.popitem(last=False)

    def __contains__(self, prediction_id: object) -> bool:
        return str(prediction_id) in self._ids


# This process's memory of finished predictions (the worker's state, not the services').
_finished = FinishedIds()


def finished_recently(prediction_id: object) -> bool:
    """Whether this process finished ``prediction_id`` in an earlier batch."""
    return prediction_id in _finished


def finished_add(prediction_ids: Iterable[object]) -> None:
    """Remember predictions this process finished (``finished_recently``)."""
    _finished.add(prediction_ids)


def install(*, node_name: str = "") -> None:
    """Remember this worker's Celery node name (``worker_node_name``), refuse to start on
    settings the system checks reject (Celery's Django fixup runs
    them but ignores the result), then connect the life cycle to the worker's signals
    (before the pool forks, so each pool child inherits the connections)."""
    refused = [message for message in run_checks() if message.is_serious()]
    if refused:
        for message in refused:
            logger.critical("%s", message)
        raise SystemExit(f"imagerec worker refuses to start: {refused[0].msg}")
    _node["name"] = node_name
    worker_process_init.connect(worker_process_start, weak=False, dispatch_uid="imagerec-worker-start")
    worker_process_shutdown.connect(worker_process_stop, weak=False, dispatch_uid="imagerec-worker-stop")
    task_prerun.connect(database_connections_check, weak=False, dispatch_uid="imagerec-connections-check")
    task_postrun.connect(database_connections_check, weak=False, dispatch_uid="imagerec-connections-check")


def worker_process_start(**_: Any) -> HeartbeatThread:
    """A pool child starts: warm up (inference workers only), first heartbeat, then the thread."""
    heartbeat = HeartbeatThread(hostname=worker_node_name(), queues=consumed_queues())
    heartbeat.beat()
    heartbeat.start()
    _heartbeats.append(heartbeat)
    return heartbeat


def worker_process_stop(**_: Any) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()


def database_connections_check(**_: Any) -> None:
    # Django's rule between requests, applied between tasks: drop a connection that is
    # broken or past CONN_MAX_AGE (with the pool: hand it back). Celery's own Django fixup
    # would close every connection, and with a pool the whole pool, around every task, so
    # each batch opened a new PostgreSQL connection (~10 ms); CELERY_DB_REUSE_MAX in the
    # settings turns that off.
    close_old_connections()
