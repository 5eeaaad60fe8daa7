"""The learning loop's Celery tasks: the scheduled tick (maintenance queue) and the
training step (the ``training`` queue, its own worker: ``celery -A imagerec worker -Q training``)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings
from django.db import transaction

from predictions.learning import services as learning_services


@shared_task(ignore_result=True)
def learning_tick() -> None:
    """Decide the A/B test or start a cycle when one is due; a new cycle goes to training."""
    outcome = learning_services.learning_tick()
    if outcome.queued and outcome.cycle is not None:
        cycle_id = outcome.cycle.pk
        transaction.on_commit(lambda: learning_cycle_train.delay(cycle_id), robust=True)


# Training runs for minutes, far past the default task limits; the child process has its own
# timeout (LEARNING_TRAIN_TIMEOUT_SECONDS) well inside these.
@shared_task(
    ignore_result=True,
    # Acknowledged at the start: a late ack would let Redis redeliver it mid-training (past
    # CELERY_VISIBILITY_TIMEOUT). A worker lost mid-training does not retrain; the tick fails the cycle.
    acks_late=False,
    soft_time_limit=settings.LEARNING_TRAIN_TIMEOUT_SECONDS + 300,
    time_limit=settings.LEARNING_TRAIN_TIMEOUT_SECONDS + 600,
)
def learning_cycle_train(cycle_id: int) -> None:
    """Train, measure and (if not worse) A/B test the candidate of one queued cycle."""
    learning_services.learning_cycle_train(cycle_id=cycle_id)
