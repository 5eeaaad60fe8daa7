"""Thin Celery tasks of the predictions room: take an id, call the services.

Queued after commit by the services (``services.prediction_enqueue``); the worker's life
cycle (model warm-up, heartbeat, what this process finished lately) is in
``predictions.worker``. Explanation, reprocess and stats tasks live in their rooms.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError

from predictions import services, worker

from .exceptions import ApplicationError, ModelIntegrityError, ModelUnavailableError, StorageUnavailableError

logger = logging.getLogger(__name__)


class PredictionTask(Task[Any, Any]):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Whatever went wrong, the prediction ends in a final state with a reason a person
        # can read; the details are in the worker's log. Retries exhausted end here too.
        if isinstance(exc, ModelIntegrityError):
            message = services.MODEL_INTEGRITY_MESSAGE
        elif isinstance(exc, ModelUnavailableError):
            message = services.MODEL_UNAVAILABLE_MESSAGE  # its own message names server paths
        elif isinstance(exc, ApplicationError):
            message = exc.message
        elif isinstance(exc, SoftTimeLimitExceeded):
            message = services.TOO_LONG_MESSAGE
        else:
            message = services.FAILED_SERVER_MESSAGE
        logger.error("Prediction %s failed: %r", args[0], exc)
        services.prediction_fail(prediction_id=args[0], error=message)
        if kwargs.get("chunk"):  # failed before its batch sent them on: they get their own tries
            services.prediction_chunk_forward(chunk=kwargs["chunk"])


@shared_task(
    bind=True,
    base=PredictionTask,
    acks_late=True,
    # The batch was handed back (pending): retry once the database, the media store or the
    # model is back, after 2, 4, 8, 16, 32, 60, 60, 60 s (about 4 minutes, long enough for a
    # database or object-store restart or a model folder replaced during a deploy); then
    # on_failure fails it.
    autoretry_for=(OperationalError, InterfaceError, ModelUnavailableError, StorageUnavailableError),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=False,
    max_retries=8,
)
def prediction_run(
    self: Task[Any, Any], prediction_id: str, rerun: bool = False, chunk: list[str] | None = None
) -> None:
    """Classify this prediction, batched with others waiting; ``rerun``: sent again by a
    reprocess job, so not skipped as one this process finished before. ``chunk``: more
    rows of the same submission in this message, claimed with it where the batch has
    room (fairly: ``_fair_draw``), the others sent on in one message."""
    ids = [prediction_id, *(chunk or [])]
    # Classified as part of an earlier batch: a row's message needs no query.
    ids = ids if rerun else [i for i in ids if not worker.finished_recently(i)]
    if not ids:
        return
    batch = services.prediction_batch_claim(prediction_id=ids[0], chunk=ids[1:])
    if batch is None:
        return
    if settings.INFERENCE_BATCH_WAIT_MS and batch.room:
        # A batch that is not full waits once for more messages to arrive (a throughput
        # setting, off by default): the task's wait, not the service's.
        time.sleep(settings.INFERENCE_BATCH_WAIT_MS / 1000)
        services.prediction_batch_fill(batch=batch)
    report = services.prediction_batch_run(batch=batch)
    worker.finished_add(report.finished)


@shared_task
def prediction_reconcile() -> int:
    """Send again what a broker outage or a lost message left pending (Celery beat)."""
    return services.prediction_reconcile()


@shared_task(
    autoretry_for=(StorageUnavailableError,),
    retry_backoff=5,
    retry_backoff_max=300,
    retry_jitter=False,
    max_retries=20,
)
def media_delete(names: list[str]) -> None:
    """Delete the stored files of a deleted prediction that a media-store outage left."""
    if services.media_delete(names=names, retry_later=False):
        raise StorageUnavailableError("The media store is still unavailable.")


@shared_task
def direct_upload_sweep() -> int:
    """Delete direct uploads never committed, once their commit can no longer come (Celery beat)."""
    return services.direct_upload_sweep()
