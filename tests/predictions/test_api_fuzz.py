"""Schema-driven fuzzing: schemathesis generates requests from the served OpenAPI schema
and sends them to a live server; no request may get a 5xx."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from pytest_django.live_server_helper import LiveServer
from rest_framework.authtoken.models import Token

from predictions.models import ModelVersion
from tests.factories import PredictionFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_fuzzing_the_api_finds_no_server_errors(
    live_server: LiveServer, user: User, active_model: ModelVersion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from predictions.api.throttles import ReadRateThrottle, SubmitRateThrottle

    monkeypatch.setattr(SubmitRateThrottle, "THROTTLE_RATES", {"submit": "100000/min"})
    monkeypatch.setattr(ReadRateThrottle, "THROTTLE_RATES", {"read": "100000/min"})
    # No worker runs here: every `wait` would last its full length. Cap it (the schema keeps 30).
    monkeypatch.setattr("predictions.api.predictions.MAX_WAIT_SECONDS", 0.2)
    PredictionFactory.create(user=user)
    # Every operation must be reached, the operators' ones (switching models) included.
    user.is_superuser = True
    user.save(update_fields=["is_superuser"])
    token = Token.objects.create(user=user).key
    cli = shutil.which("schemathesis") or str(Path(sys.executable).parent / "schemathesis")

    result = subprocess.run(
        [cli, "run", f"{live_server.url}/api/v1/schema/", "--checks", "not_a_server_error",
         "--max-examples", "25", "--header", f"Authorization: Token {token}",
         "--generation-deterministic", "--workers", "1", "--no-color", "--request-timeout", "45"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    summary = result.stdout[result.stdout.rindex("SUMMARY") :]
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", summary)
    assert selected, summary
    assert selected.group(1) == selected.group(2) == selected.group(3), summary  # every operation
    assert " failed" not in summary, summary
    assert "Authentication failed" not in summary, summary
