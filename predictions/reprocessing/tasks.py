"""The reprocess job's step: send the next chunk, then the next step while there is work."""

from __future__ import annotations

from celery import shared_task

from . import services


@shared_task(ignore_result=True)
def reprocess_step(job_id: int) -> None:
    """One step of a reprocess job (``services.reprocess_job_step``); it queues the next."""
    services.reprocess_job_step(job_id=job_id)
