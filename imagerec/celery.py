"""Celery application, configured from Django settings (``CELERY_`` namespace)."""

import os

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings")

app = Celery("imagerec", task_cls="celery.contrib.django.task:DjangoTask")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
def _worker_life_cycle(**_: object) -> None:
    # The worker's life cycle (model warm-up and heartbeat in each pool child, connection
    # checks between tasks) is predictions.worker. Connected here, in the worker's main
    # process once Celery's Django fixup has set Django up, and before the pool forks;
    # never in the web process. It does not import TensorFlow.
    from predictions import worker

    worker.install()
