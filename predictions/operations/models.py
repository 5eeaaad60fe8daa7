"""Operations: the workers' heartbeats."""

from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """Last sign of life of one Celery worker process, written by the worker itself.

    Readiness ("a worker consuming the inference queue with its model loaded") and the
    worker metrics read this table, so they work with every broker, including the
    filesystem one.
    """

    hostname = models.CharField(max_length=255, unique=True)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    last_seen_at = models.DateTimeField(db_index=True)
    queues = models.JSONField(default=list, blank=True, help_text="Names of the queues this worker consumes")
    model_loaded = models.BooleanField(default=False, help_text="The active model is loaded and warmed up")
    model_version = models.CharField(max_length=160, blank=True)
    model_load_seconds = models.FloatField(null=True, blank=True)
    model_error = models.CharField(max_length=300, blank=True, help_text="Why the model is not loaded (yet)")

    class Meta:
        ordering = ["hostname"]

    def __str__(self) -> str:
        return f"{self.hostname} (seen {self.last_seen_at:%Y-%m-%d %H:%M:%S})"

    @property
    def host(self) -> str:
        """The machine the worker runs on: the part of its node name (``name@host:pid``,
        ``predictions.worker.worker_node_name``) after the ``@``, without the pid."""
        node = self.hostname.rpartition(":")[0] if ":" in self.hostname else self.hostname
        return node.partition("@")[2] or node

    @property
    def models(self) -> list[str]:
        """The model versions this worker holds in memory (``name:version``), active first."""
        return [name for name in (part.strip() for part in self.model_version.split(",")) if name]
