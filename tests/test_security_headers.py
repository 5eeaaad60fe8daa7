"""What every response says about itself: a strict Content-Security-Policy that the pages
keep (no inline script, no style attribute, no event handler attribute anywhere)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from predictions.models import ModelVersion
from tests.factories import CorrectionFactory, ModelVersionFactory, OperatorFactory, SucceededPredictionFactory

INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)
STYLE_ATTRIBUTE = re.compile(r"<[a-z][^>]*\sstyle=", re.IGNORECASE)
STYLE_ELEMENT = re.compile(r"<style[\s>]", re.IGNORECASE)
HANDLER_ATTRIBUTE = re.compile(r"<[a-z][^>]*\son[a-z]+=", re.IGNORECASE)


def _policy(response: object) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]  # type: ignore[index]
    return {part.split()[0]: part.split()[1:] for part in header.split(";") if part.strip()}


@pytest.mark.parametrize("path", ["/accounts/login/", "/api/v1/predictions/", "/health/live", "/no-such-page/"])
def test_every_response_has_a_strict_content_security_policy(client: Client, db: None, path: str) -> None:
    policy = _policy(client.get(path))

    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["default-src"] == ["'self'"]
    assert not any("unsafe" in source for sources in policy.values() for source in sources)


@pytest.fixture
def model_version(db: None) -> ModelVersion:
    return ModelVersionFactory.create()


def _pages(user: User, model_version: ModelVersion) -> list[str]:
    done = SucceededPredictionFactory.create(user=user, model_version=model_version, inference_ms=20.0)
    CorrectionFactory.create(prediction=SucceededPredictionFactory.create(user=user, model_version=model_version))
    return [
        reverse("predictions:upload"),
        reverse("predictions:detail", args=[done.id]),
        reverse("predictions:card", args=[done.id]),
        f"{reverse('predictions:batch')}?id={done.id}",
        reverse("predictions:history"),
        "/stats/",
        reverse("accounts:profile"),
        reverse("password_change"),
        "/api/v1/docs/",
        reverse("admin:index"),
        reverse("admin:predictions_prediction_changelist"),
        reverse("admin:predictions_prediction_change", args=[done.id]),
        reverse("admin:predictions_correction_changelist"),
        reverse("admin:predictions_modelversion_changelist"),
        reverse("admin:predictions_modelversion_change", args=[model_version.pk]),
        reverse("admin:axes_accessattempt_changelist"),
    ]


def test_no_page_needs_what_the_policy_refuses(client: Client, model_version: ModelVersion) -> None:
    operator: User = OperatorFactory.create(is_superuser=True)
    client.force_login(operator)

    for path in [*_pages(operator, model_version), reverse("login"), reverse("signup")]:
        if path in (reverse("login"), reverse("signup")):
            client.logout()
        response = client.get(path)
        html = response.content.decode()
        assert response.status_code == 200, path
        assert INLINE_SCRIPT.findall(html) == [], path
        assert STYLE_ATTRIBUTE.findall(html) == [], path
        assert STYLE_ELEMENT.findall(html) == [], path
        assert HANDLER_ATTRIBUTE.findall(html) == [], path
