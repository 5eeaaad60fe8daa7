"""Bodies the API cannot parse: each is a 400 in the one error shape, never a 500."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User

from tests.conftest import api_as
from tests.factories import ModelVersionFactory, SucceededPredictionFactory

# 1,000 nested arrays: 2 KB that Python's JSON decoder cannot descend without a RecursionError.
DEEP_JSON = "[" * 1000 + "]" * 1000


def _correction_url(user: User) -> str:
    prediction = SucceededPredictionFactory.create(user=user, model_version=ModelVersionFactory.create())
    return f"/api/v1/predictions/{prediction.id}/correction/"


@pytest.mark.parametrize("depth", [1000, 100_000])
def test_json_nested_too_deep_is_a_400_in_the_error_shape(user: User, depth: int) -> None:
    body = "[" * depth + "]" * depth

    response = api_as(user).generic("POST", _correction_url(user), body, content_type="application/json")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "parse_error"
    assert error["message"].startswith("The request body could not be read")


def test_too_many_form_fields_is_a_400_in_the_error_shape(user: User) -> None:
    body = "&".join(f"f{index}=x" for index in range(1100))

    response = api_as(user).generic(
        "POST", _correction_url(user), body, content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error"


def test_nested_json_to_the_model_update_is_a_400_too(user: User) -> None:
    ModelVersionFactory.create()

    response = api_as(user).generic("PATCH", "/api/v1/models/lite/3/", DEEP_JSON, content_type="application/json")

    # Not allowed to change models either way; what matters is that the body never gives a 500.
    assert response.status_code in (400, 403)
    assert set(response.json()) == {"error"}
