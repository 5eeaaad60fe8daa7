"""Celery application, configured from Django settings (``CELERY_`` namespace)."""

import functools
import os

from celery import Celery, signals
from kombu.exceptions import KombuError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings")

app = Celery("imagerec", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Tasks that live in the rooms of the predictions app (autodiscovery finds only
# ``<app>.tasks``).
app.conf.imports = (
    "predictions.explanations.tasks",
    "predictions.reprocessing.tasks",
    "predictions.operations.tasks",
    "predictions.learning.tasks",
)


@functools.cache
def broker_errors() -> tuple[type[BaseException], ...]:
    """What the configured transport raises when the broker is unreachable: a sender
    catches these, keeps its row pending and lets the reconciler send it later."""
    connection = app.connection_for_write()
    return (KombuError, OSError, *connection.connection_errors, *connection.channel_errors)


@signals.worker_init.connect
def _worker_life_cycle(sender: object = None, **_: object) -> None:
    # The worker's life cycle (model warm-up and heartbeat in each pool child, connection
    # checks between tasks) is predictions.worker. Connected here, in the worker's main
    # process once Celery's Django fixup has set Django up, and before the pool forks;
    # never in the web process. It does not import TensorFlow. The sender is Celery's
    # WorkController: its hostname is the node name (-n, with %h expanded).
    from predictions import worker

    worker.install(node_name=str(getattr(sender, "hostname", "") or ""))
