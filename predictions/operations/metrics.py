"""Prometheus metrics: request metrics from a middleware in this process, and every
worker-side figure read from the database (and broker) at scrape time.

Worker metrics travel through the database, not through a push gateway or a
multiprocess directory shared with the worker: ``PredictionCollector`` runs a few
GROUP BY queries per scrape (predictions by status and model version, the inference
latency histogram from ``inference_ms``), asks the broker for the queue depth and
reads the worker heartbeats (count, model load time). Any web process answers the
same, so there is nothing to aggregate across gunicorn workers for these.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.db import DatabaseError
from django.db.models import Count, Sum
from django.http import HttpRequest, HttpResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from predictions import access
from predictions.models import Prediction, PredictionStatus, WorkerHeartbeat
from predictions.operations import health
from predictions.operations import selectors as operations_selectors
from predictions.operations.stats import HISTOGRAM_BOUNDS_MS, HistogramBucket, histogram_aggregates, histogram_buckets

# Request metrics live in their own registry (not the global default one), so tests
# and scrapes see exactly what this module defines.
REQUEST_REGISTRY = CollectorRegistry(auto_describe=True)
REQUESTS = Counter(
    "imagerec_http_requests",
    "HTTP requests handled, by view, method and status code.",
    ["view", "method", "status"],
    registry=REQUEST_REGISTRY,
)
FAST_PATH_REQUESTS = Counter(
    "imagerec_api_fast_path_requests",
    "Requests the API's fast path took up (predictions.api.fastpath): served by it, or handed over to Django.",
    ["outcome"],
    registry=REQUEST_REGISTRY,
)
REQUEST_LATENCY = Histogram(
    "imagerec_http_request_duration_seconds",
    "Time to produce a response, by view and method.",
    ["view", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REQUEST_REGISTRY,
)


class RequestMetricsMiddleware:
    """Counts and times every request, labelled by URL name (never the raw path, which
    would put prediction ids into label values). Sync and async capable, so under ASGI
    it adds no thread hop."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        started = time.perf_counter()
        response = self.get_response(request)
        _observe(request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response: HttpResponse = await self.get_response(request)
        _observe(request, response, started)
        return response


def _observe(request: HttpRequest, response: HttpResponse, started: float) -> None:
    match = getattr(request, "resolver_match", None)
    view = match.view_name if match is not None else "<unresolved>"
    REQUEST_LATENCY.labels(view=view, method=request.method).observe(time.perf_counter() - started)
    REQUESTS.labels(view=view, method=request.method, status=str(response.status_code)).inc()


class PredictionCollector(Collector):
    """Worker-side metrics, computed from the database and broker at scrape time."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("imagerec_database_up", "1 if the metrics queries could read the database.")
        try:
            families = list(self._from_database())
        except DatabaseError:
            up.add_metric([], 0)
            yield up
        else:
            up.add_metric([], 1)
            yield up
            yield from families
        yield from self._from_broker()

    def _from_database(self) -> Iterator[Metric]:
        predictions = GaugeMetricFamily(
            "imagerec_predictions",
            "Predictions stored, by status and model version (name:version; empty before a run).",
            labels=["status", "model_version"],
        )
        for status, model_version, count in prediction_counts_by_status_and_model():
            predictions.add_metric([status, model_version], count)
        yield predictions

        buckets, total_ms = inference_histogram_all_time()
        cumulative, running = [], 0
        for bucket in buckets:
            running += bucket.count
            upper = "+Inf" if bucket.upper_ms is None else _float_label(bucket.upper_ms / 1000)
            cumulative.append((upper, running))
        histogram = HistogramMetricFamily(
            "imagerec_inference_duration_seconds",
            "Model inference time per image of succeeded predictions (from inference_ms).",
        )
        histogram.add_metric([], buckets=cumulative, sum_value=total_ms / 1000)
        yield histogram

        workers = operations_selectors.worker_heartbeat_list_fresh(
            max_age_seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS
        )
        worker_count = GaugeMetricFamily("imagerec_workers", "Celery workers with a fresh heartbeat (answering).")
        worker_count.add_metric([], len(workers))
        yield worker_count
        yield self._worker_info(workers)
        yield self._load_times(workers)

    def _worker_info(self, workers: list[WorkerHeartbeat]) -> Metric:
        info = GaugeMetricFamily(
            "imagerec_worker_model_loaded",
            "1 per answering worker and model version it holds in memory (0 with no model), by host.",
            labels=["worker", "host", "model_version"],
        )
        for worker in workers:
            for model_version in worker.models or [""]:
                info.add_metric([worker.hostname, worker.host, model_version], 1 if model_version else 0)
        return info

    def _load_times(self, workers: list[WorkerHeartbeat]) -> Metric:
        load = GaugeMetricFamily(
            "imagerec_model_load_seconds",
            "Time the worker took to load the model, per answering worker.",
            labels=["worker", "model_version"],
        )
        for worker in workers:
            if worker.model_load_seconds is not None:
                load.add_metric([worker.hostname, worker.model_version], worker.model_load_seconds)
        return load

    def _from_broker(self) -> Iterator[Metric]:
        depth = health.broker_queue_depth()
        up = GaugeMetricFamily("imagerec_broker_up", "1 if the broker answered the queue-depth read.")
        up.add_metric([], 0 if depth is None else 1)
        yield up
        if depth is not None:
            queue = GaugeMetricFamily("imagerec_queue_depth", "Messages waiting in the broker queue.", labels=["queue"])
            queue.add_metric([health.INFERENCE_QUEUE], depth)
            yield queue


def _float_label(value: float) -> str:
    return repr(float(value))


# --- Database reads at scrape time (all-time, every user) ---------------------------


def prediction_counts_by_status_and_model() -> list[tuple[str, str, int]]:
    """(status, "name:version" or "", count) over all predictions, one GROUP BY."""
    rows = (
        Prediction.objects.order_by()
        .values("status", "model_version__name", "model_version__version")
        .annotate(n=Count("id"))
    )
    return [
        (
            row["status"],
            f"{row['model_version__name']}:{row['model_version__version']}" if row["model_version__name"] else "",
            row["n"],
        )
        for row in rows
    ]


def inference_histogram_all_time(
    *, bounds: Sequence[float] = HISTOGRAM_BOUNDS_MS
) -> tuple[list[HistogramBucket], float]:
    """Buckets of ``inference_ms`` over all succeeded predictions and their sum (ms), one query."""
    counts = (
        Prediction.objects.order_by()
        .filter(status=PredictionStatus.SUCCEEDED)
        .aggregate(**histogram_aggregates("inference_ms", bounds), total=Sum("inference_ms"))
    )
    return histogram_buckets(counts, bounds), float(counts["total"] or 0.0)


def metrics_allowed(request: HttpRequest) -> bool:
    """A session allowed to read every prediction (``access``), ``Authorization: Bearer
    $METRICS_TOKEN``, or a listed client IP."""
    if access.can_view_all_predictions(getattr(request, "user", None)):
        return True
    token = settings.METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    presented = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    if token and presented and hmac.compare_digest(presented.encode(), token.encode()):
        return True
    # REMOTE_ADDR only: X-Forwarded-For is client-controlled unless a proxy rewrites it.
    return request.META.get("REMOTE_ADDR", "") in settings.METRICS_ALLOWED_IPS


def metrics_text() -> bytes:
    """The full exposition: this process's request metrics plus the database collector.

    With ``PROMETHEUS_MULTIPROC_DIR`` set (several gunicorn workers), the request
    metrics of every web process are merged from that directory.
    """
    request_registry = REQUEST_REGISTRY
    if settings.PROMETHEUS_MULTIPROC_DIR:
        request_registry = CollectorRegistry()
        MultiProcessCollector(request_registry)
    scrape_registry = CollectorRegistry(auto_describe=False)
    scrape_registry.register(PredictionCollector())
    return generate_latest(request_registry) + generate_latest(scrape_registry)
