"""Stats page, health probes and the Prometheus scrape: parse input, call a selector
or check, render."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from accounts.http import AuthenticatedHttpRequest
from predictions.operations import health, metrics, stats
from predictions.operations import selectors as operations_selectors
from predictions.operations.stats import charts


@login_required
@require_GET
def stats_page(request: AuthenticatedHttpRequest) -> HttpResponse:
    days = window_days(request.GET.get("days"))
    own = request.GET.get("scope") == "mine"
    report = stats.prediction_stats_cached(user=request.user, days=days, own=own)
    reviewed = sum(row.reviewed for row in report.per_model_version)
    confirmed = sum(row.confirmed for row in report.per_model_version)
    corrections = sum(row.corrections for row in report.per_model_version)
    may_read_all = stats.stats_all_users(request.user)
    context = {
        "report": report,
        "may_read_all": may_read_all,
        # Operators see the worker hosts answering now and what each holds in memory.
        "worker_hosts": health.worker_hosts(
            operations_selectors.worker_heartbeat_list_fresh(max_age_seconds=settings.WORKER_HEARTBEAT_MAX_AGE_SECONDS)
        )
        if may_read_all
        else {},
        "scope_query": "&scope=mine" if own else "",
        "window_choices": stats.WINDOW_DAYS,
        "volume": charts.volume_chart(report),
        "labels": charts.label_chart(report),
        "reviewed": reviewed,
        "confirmed": confirmed,
        "corrections": corrections,
        "live_top1": confirmed / reviewed if reviewed else None,
        "correction_rate": corrections / report.succeeded if report.succeeded else None,
        "histogram_bars": charts.bars([(_bucket_label(b.upper_ms), b.count) for b in report.histogram]),
        "stats_cache_seconds": settings.STATS_CACHE_SECONDS,
        "latency_rows": [(name.removesuffix("_ms"), report.latency[name]) for name in stats.LATENCY_FIELDS],
    }
    return render(request, "predictions/stats.html", context)


def window_days(raw: str | None) -> int:
    """The ``?days=`` window; anything but an offered choice falls back to the default."""
    try:
        days = int(raw or stats.DEFAULT_WINDOW_DAYS)
    except ValueError:
        return stats.DEFAULT_WINDOW_DAYS
    return days if days in stats.WINDOW_DAYS else stats.DEFAULT_WINDOW_DAYS


def _bucket_label(upper_ms: float | None) -> str:
    if upper_ms is None:
        return f"> {stats.HISTOGRAM_BOUNDS_MS[-1]:g} ms"
    return f"≤ {upper_ms:g} ms"


@never_cache
@require_GET
async def health_live(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests; nothing else is checked. Async: answered
    on the event loop, never queued behind the sync work of other requests."""
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def health_ready(request: HttpRequest) -> JsonResponse:
    """200 when database, broker, a worker and the active model are all there, else 503.

    Anyone (a load balancer, a probe) gets the status and which checks fail; the details
    (error texts, which may name hosts and paths, worker names, the model) only go to
    those who may read ``/metrics``: an operator session, the metrics token or address."""
    checks = health.readiness_checks()
    failing = [check.name for check in checks if not check.ok]
    detailed = metrics.metrics_allowed(request)
    body = {
        "status": "unavailable" if failing else "ok",
        "failing": failing,
        "checks": {check.name: check.as_dict() if detailed else {"ok": check.ok} for check in checks},
    }
    return JsonResponse(body, status=503 if failing else 200)


@never_cache
@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not metrics.metrics_allowed(request):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    return HttpResponse(metrics.metrics_text(), content_type=CONTENT_TYPE_LATEST)
