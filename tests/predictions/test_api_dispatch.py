"""method_dispatch: two single-action views behind one URL, misconfigurations refused early."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured
from rest_framework.test import APIClient

from predictions.api.dispatch import method_dispatch
from predictions.api.predictions import PredictionCreateApi, PredictionDeleteApi, PredictionListApi
from predictions.registry.api import ModelVersionListApi


def test_misconfigured_dispatch_fails_when_the_urls_load() -> None:
    with pytest.raises(ImproperlyConfigured, match="all async or all sync"):
        method_dispatch(GET=ModelVersionListApi, POST=PredictionCreateApi)
    with pytest.raises(ImproperlyConfigured, match="has no post"):
        method_dispatch(GET=PredictionListApi, POST=PredictionDeleteApi)
    with pytest.raises(ImproperlyConfigured, match="HTTP method"):
        method_dispatch(get=PredictionListApi)
    with pytest.raises(ImproperlyConfigured):
        method_dispatch()


def test_each_method_reaches_its_own_view_and_the_schema_sees_them() -> None:
    view = method_dispatch(GET=PredictionListApi, POST=PredictionCreateApi)

    assert {method: getattr(callback, "cls") for method, callback in view.views_by_method.items()} == {
        "GET": PredictionListApi,
        "POST": PredictionCreateApi,
    }
    assert getattr(view, "csrf_exempt")  # like every DRF view: SessionAuthentication checks CSRF itself


def test_session_clients_still_need_the_csrf_token_to_submit(user: User) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(user)

    response = client.post("/api/v1/predictions/", {}, format="multipart")

    assert response.status_code == 403
    assert "CSRF" in response.json()["error"]["message"]
