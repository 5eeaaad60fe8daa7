"""gunicorn settings shared by docker-compose, the Docker image and `make loadtest`
(``gunicorn --config python:imagerec.gunicorn ...``).

With several worker processes, each keeps its own request counters; prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``) has every process write them to files
in that directory, and a scrape of any process adds them all up. The directory must be
empty when the server starts and a dead worker's files must be marked, as the
prometheus-client documentation prescribes for gunicorn: the two hooks below.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

# ASGI: a long-polling client (?wait=) waits on an event, not on a thread.
worker_class = "uvicorn_worker.UvicornWorker"
timeout = 60
keepalive = 30


def on_starting(server: Any) -> None:
    """Start from an empty metrics directory: stale files would add old counts."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """A worker that exits leaves its counters (kept) and live gauges (dropped)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
