"""API tokens are kept in the web process only while changes are announced, and a
rotated or deleted token, or a deactivated user, stops working at the next request:
changed here (signals), changed by another process (its announcement on Redis), and
with no Redis (nothing is kept: every request reads the token)."""

from __future__ import annotations

import os
import time

import pytest
import redis
from django.contrib.auth.models import User
from django.db import connection
from django.test.utils import CaptureQueriesContext
from pytest_django import Settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import services as account_services
from predictions import events

LOCAL_REDIS = os.environ.get("TEST_EVENTS_REDIS_URL", "redis://127.0.0.1:6379/15")
URL = "/api/v1/predictions/"


@pytest.fixture
def heard(settings: Settings) -> None:
    """Change announcements are heard (Redis): tokens are kept between requests."""
    try:
        redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1).ping()
    except redis.RedisError:
        pytest.skip(f"needs Redis at {LOCAL_REDIS} (the CI machine runs one)")
    settings.EVENTS_REDIS_URL = LOCAL_REDIS
    events.change_stamp("tokens")  # starts the listener
    listener = events._listener()
    assert listener is not None
    assert listener.subscribed.wait(10)


def _client(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _token_reads(client: APIClient) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as queries:
        status = client.get(URL).status_code
    return status, sum("authtoken_token" in q["sql"] for q in queries.captured_queries)


def test_a_token_is_read_once_while_changes_are_heard(heard: None, user: User) -> None:
    client = _client(Token.objects.create(user=user).key)
    assert _token_reads(client) == (200, 1)
    assert _token_reads(client) == (200, 0)


def test_a_rotated_token_stops_working_at_the_next_request(heard: None, user: User) -> None:
    old = Token.objects.create(user=user).key
    assert _client(old).get(URL).status_code == 200
    new = account_services.token_rotate(user=user)
    assert _client(old).get(URL).status_code == 401
    assert _client(new).get(URL).status_code == 200


def test_a_deactivated_user_is_refused_at_the_next_request(heard: None, user: User) -> None:
    client = _client(Token.objects.create(user=user).key)
    assert client.get(URL).status_code == 200
    user.is_active = False
    user.save()
    response = client.get(URL)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "User inactive or deleted."


def test_another_processs_token_deletion_is_heard_over_redis(heard: None, user: User) -> None:
    token = Token.objects.create(user=user)
    client = _client(token.key)
    assert client.get(URL).status_code == 200
    before = events.change_stamp("tokens")
    Token.objects.filter(key=token.key)._raw_delete(connection.alias)  # as another process: no signal here
    events.change_publish("tokens")  # what that process's deletion announces once committed
    for _ in range(200):  # the listener thread hears it (a wait for it, not a timing assertion)
        if events.change_stamp("tokens") != before:
            break
        time.sleep(0.05)
    assert client.get(URL).status_code == 401


def test_without_redis_nothing_is_kept_and_a_deleted_token_is_refused(settings: Settings, user: User) -> None:
    settings.EVENTS_REDIS_URL = ""
    token = Token.objects.create(user=user)
    client = _client(token.key)
    assert _token_reads(client) == (200, 1)
    assert _token_reads(client) == (200, 1)  # read on every request
    Token.objects.filter(key=token.key)._raw_delete(connection.alias)  # no signal at all
    assert client.get(URL).status_code == 401
