"""Thin Celery tasks: take an id, call a service, decide about retries.

The worker's life cycle (model warm-up, heartbeat) is in ``predictions.worker``.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import InterfaceError, OperationalError

from . import explanations, services, stats
from .exceptions import ApplicationError, ModelUnavailableError

logger = logging.getLogger(__name__)


class PredictionTask(Task[Any, Any]):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Whatever went wrong, the prediction ends in a final state with a reason a person
        # can read; the details are in the worker's log.
        if isinstance(exc, ModelUnavailableError):
            message = services.MODEL_UNAVAILABLE_MESSAGE  # its own message names server paths
        elif isinstance(exc, ApplicationError):
            message = exc.message
        elif isinstance(exc, SoftTimeLimitExceeded):
            message = services.TOO_LONG_MESSAGE
        else:
            message = services.FAILED_SERVER_MESSAGE
        logger.error("Prediction %s failed: %r", args[0], exc)
        services.prediction_fail(prediction_id=args[0], error=message)


# Retries after 2, 4, 8, 16, 32, 60, 60, 60 s (about 4 minutes): long enough for a
# database restart or a model folder being replaced during a deploy.
RETRY_DELAYS_SECONDS = (2, 4, 8, 16, 32, 60, 60, 60)


@shared_task(
    bind=True,
    base=PredictionTask,
    name=services.PREDICTION_RUN_TASK,
    max_retries=len(RETRY_DELAYS_SECONDS),
    acks_late=True,
)
def prediction_run(self: Task[Any, Any], prediction_id: str, rerun: bool = False) -> None:
    """Classify this prediction, batched with others waiting (services.prediction_process);
    ``rerun``: sent again by a reprocess job."""
    try:
        services.prediction_process(prediction_id=prediction_id, rerun=rerun)
    except (OperationalError, InterfaceError, ModelUnavailableError) as error:
        # The batch was handed back (pending): retry once the database or model is back.
        raise self.retry(
            exc=error, countdown=RETRY_DELAYS_SECONDS[min(self.request.retries, len(RETRY_DELAYS_SECONDS) - 1)]
        ) from error


@shared_task(ignore_result=True, name=services.REPROCESS_STEP_TASK)
def reprocess_step(job_id: int) -> None:
    """One step of a reprocess job; the next one is sent while the job has work."""
    if services.reprocess_job_step(job_id=job_id):
        reprocess_step.apply_async(args=(job_id,), countdown=services.REPROCESS_STEP_SECONDS)


class ExplanationTask(Task[Any, Any]):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Never left pending: whatever went wrong, the owner reads a reason; details in the log.
        if isinstance(exc, ApplicationError):
            message = exc.message
        elif isinstance(exc, SoftTimeLimitExceeded):
            message = explanations.TOO_LONG_MESSAGE
        else:
            message = explanations.FAILED_SERVER_MESSAGE
        logger.error("Explanation %s failed: %r", args[0], exc)
        explanations.explanation_fail(explanation_id=args[0], error=message)


@shared_task(bind=True, base=ExplanationTask, name=explanations.EXPLANATION_COMPUTE_TASK, acks_late=True)
def explanation_compute(self: Task[Any, Any], explanation_id: int) -> None:
    """Compute one Grad-CAM explanation (in the inference worker, where the model is)."""
    explanations.explanation_compute(explanation_id=explanation_id)


@shared_task
def prediction_reconcile() -> int:
    return services.prediction_reconcile()


@shared_task(ignore_result=True)
def stats_refresh() -> None:
    stats.prediction_stats_refresh()
