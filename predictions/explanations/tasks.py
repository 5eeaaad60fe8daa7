"""The explanation task: take an id, compute it in the inference worker (where the model is)."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded

from ..exceptions import ApplicationError, StorageUnavailableError
from . import services

logger = logging.getLogger(__name__)


class ExplanationTask(Task[Any, Any]):
    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Never left pending: whatever went wrong, the owner reads a reason; details in the log.
        if isinstance(exc, ApplicationError):
            message = exc.message
        elif isinstance(exc, SoftTimeLimitExceeded):
            message = services.TOO_LONG_MESSAGE
        else:
            message = services.FAILED_SERVER_MESSAGE
        logger.error("Explanation %s failed: %r", args[0], exc)
        services.explanation_fail(explanation_id=args[0], error=message)


# A media-store outage is retried (the row stays pending) for about four minutes.
@shared_task(
    bind=True,
    base=ExplanationTask,
    acks_late=True,
    autoretry_for=(StorageUnavailableError,),
    retry_backoff=2,
    retry_backoff_max=60,
    retry_jitter=False,
    max_retries=8,
)
def explanation_compute(self: Task[Any, Any], explanation_id: int) -> None:
    """Compute one Grad-CAM explanation (in the inference worker, where the model is)."""
    services.explanation_compute(explanation_id=explanation_id)
