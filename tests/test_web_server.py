"""The web server as docker-compose runs it: several gunicorn worker processes."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import BASE_DIR, _compose_web_command, _database_url, _free_port


def _health_live_count(text: str) -> float:
    for family in text_string_to_metric_families(text):
        if family.name == "imagerec_http_requests":
            return sum(
                sample.value
                for sample in family.samples
                if sample.name.endswith("_total") and sample.labels.get("view") == "health-live"
            )
    return 0.0


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_every_scrape_counts_the_requests_of_every_worker_process(tmp_path: Path, media_dir: Path) -> None:
    """Two worker processes answer 30 probes between them; whichever answers a scrape
    reports all 30 (prometheus-client multiprocess mode, as compose configures it)."""
    port = _free_port()
    env = {
        **os.environ, "DATABASE_URL": _database_url(), "MEDIA_ROOT": str(media_dir), "WEB_CONCURRENCY": "2",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prometheus"), "METRICS_TOKEN": "scrape-secret",
        "LOG_LEVEL": "WARNING",
    }  # fmt: skip
    server = subprocess.Popen(_compose_web_command(port), cwd=BASE_DIR, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(150):  # the server is up once it answers (its first request loads the app)
            try:
                if requests.get(f"{base}/health/live", timeout=10).status_code == 200:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        first = _health_live_count(
            requests.get(f"{base}/metrics", headers={"Authorization": "Bearer scrape-secret"}, timeout=10).text
        )
        for _ in range(30):  # a new connection each: the kernel spreads them over both processes
            assert requests.get(f"{base}/health/live", timeout=10, headers={"Connection": "close"}).status_code == 200
        scrapes = [
            _health_live_count(
                requests.get(
                    f"{base}/metrics",
                    headers={"Authorization": "Bearer scrape-secret", "Connection": "close"},
                    timeout=10,
                ).text
            )
            for _ in range(6)
        ]
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert scrapes == [first + 30] * 6
