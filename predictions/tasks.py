"""Thin Celery tasks: take an id, call a service, decide about retries."""

from __future__ import annotations

import logging
import os
import socket
from types import SimpleNamespace
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_postrun, task_prerun, worker_process_init, worker_process_shutdown
from django.db import InterfaceError, OperationalError, close_old_connections

from . import heartbeat, services, stats
from .exceptions import ApplicationError, ModelUnavailableError

logger = logging.getLogger(__name__)


class PredictionTask(Task):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Whatever went wrong, the prediction ends in a final state with a reason a person
        # can read; the details are in the worker's log.
        if isinstance(exc, ApplicationError):
            message = exc.message
        elif isinstance(exc, SoftTimeLimitExceeded):
            message = "Classification took too long and was stopped. Please try again."
        else:
            message = services.FAILED_SERVER_MESSAGE
        logger.error("Prediction %s failed: %r", args[0], exc)
        services.prediction_fail(prediction_id=args[0], error=message)


@shared_task(bind=True, base=PredictionTask, max_retries=3, acks_late=True)
def prediction_run(self: Task, prediction_id: str) -> None:
    """Classify this prediction, batched with others waiting (services.prediction_process)."""
    try:
        services.prediction_process(prediction_id=prediction_id)
    except (OperationalError, InterfaceError, ModelUnavailableError) as error:
        # The batch was handed back (pending): retry once the database or model is back.
        raise self.retry(exc=error, countdown=2**self.request.retries) from error


@shared_task
def prediction_reconcile() -> int:
    return services.prediction_reconcile()


@shared_task(ignore_result=True)
def stats_refresh() -> None:
    stats.prediction_stats_refresh()


# --- Worker process life cycle ------------------------------------------------------
# Workers run the prefork pool with one child per worker (`--pool=prefork -c 1`): the
# parent never imports TensorFlow, the child loads the model on start (worker_process_init)
# and, since a child can be killed and re-forked by the parent, Celery's time limits are
# enforced without ever forking a process that has TensorFlow loaded. The child also
# writes the worker heartbeat that readiness and /metrics read.

# One heartbeat thread per pool child; kept here so shutdown can stop it.
_heartbeats: list[heartbeat.HeartbeatThread] = []


def worker_node_name() -> str:
    """This worker's name in heartbeats: host and the pool parent's pid."""
    return f"celery@{socket.gethostname()}:{os.getppid()}"


@worker_process_init.connect
def _start_worker_process(**_: Any) -> None:
    try:
        services.model_warmup()
    except ApplicationError as error:
        logger.warning("Model not warmed up: %s", error.message)
    _start_heartbeat(sender=SimpleNamespace(hostname=worker_node_name()))


def _start_heartbeat(sender: Any = None, **_: Any) -> None:
    model_version, load_seconds = heartbeat.loaded_model()
    thread = heartbeat.HeartbeatThread(
        hostname=getattr(sender, "hostname", None) or socket.gethostname(),
        model_version=model_version,
        model_load_seconds=load_seconds,
    )
    thread.beat()
    thread.start()
    _heartbeats.append(thread)


@task_prerun.connect
@task_postrun.connect
def _database_connections_check(**_: Any) -> None:
    # Django's rule between requests, applied between tasks: drop a connection that is
    # broken or past CONN_MAX_AGE (with the pool: hand it back). Celery's own Django fixup
    # would close every connection, and with a pool the whole pool, around every task, so
    # each batch opened a new PostgreSQL connection (~10 ms); CELERY_DB_REUSE_MAX in the
    # settings turns that off.
    close_old_connections()


@worker_process_shutdown.connect
def _stop_heartbeat(**_: Any) -> None:
    while _heartbeats:
        _heartbeats.pop().stop()
