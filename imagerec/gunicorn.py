"""gunicorn settings shared by `make run`, docker-compose, the Docker image and
`make loadtest` (``gunicorn --config python:imagerec.gunicorn ...``).

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

from uvicorn_worker import UvicornWorker as _UvicornWorker


class UvicornWorker(_UvicornWorker):
    """uvicorn's gunicorn worker without its ``Server: uvicorn`` header: the answer names
    no server software to whoever probes it."""

    CONFIG_KWARGS = {**_UvicornWorker.CONFIG_KWARGS, "server_header": False}


# ASGI: a long-polling client (?wait=) waits on an event, not on a thread.
worker_class = "imagerec.gunicorn.UvicornWorker"
timeout = 60
keepalive = 30
# X-Forwarded-For / -Proto are believed only from these addresses: none by default (`make
# run` serves clients directly, and a client could otherwise pick the address the login
# lockout counts). Compose sets FORWARDED_ALLOW_IPS="*" for the web service, which only its
# proxy can reach and which replaces the header (deploy/nginx.conf.template).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "")


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
