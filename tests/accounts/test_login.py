"""Failed logins, as someone guessing passwords meets them: django-axes locks the
username from that address on every login page, with a 429 page saying when to retry."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from asgiref.sync import async_to_sync
from django.contrib.auth.models import User
from django.core.management import call_command
from django.test import AsyncClient, Client
from django.urls import reverse
from pytest_django import Settings

from tests.factories import UserFactory

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedWSGIResponse

PASSWORD = "correct-horse-battery"  # UserFactory's


def _fail(client: Client, url: str, username: str, times: int, **extra: Any) -> list[_MonkeyPatchedWSGIResponse]:
    return [client.post(url, {"username": username, "password": "wrong"}, **extra) for _ in range(times)]


def _logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("url_name", ["admin:login", "login"])
def test_ten_wrong_passwords_then_the_right_one_is_refused(client: Client, db: None, url_name: str) -> None:
    admin = UserFactory.create(is_staff=True, is_superuser=True)
    url = reverse(url_name)
    _fail(client, url, admin.username, 10)

    refused = client.post(url, {"username": admin.username, "password": PASSWORD})

    assert refused.status_code == 429
    assert b"Too many failed attempts" in refused.content
    assert b"Try again in 5 minutes" in refused.content
    assert not _logged_in(client)
    assert client.get(reverse("admin:index")).status_code == 302  # still sent to the login page


def test_the_login_page_locks_at_the_limit_not_before(client: Client, user: User, settings: Settings) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    url = reverse("login")

    before = _fail(client, url, user.username, 2)
    at_limit = _fail(client, url, user.username, 1)[0]

    assert [r.status_code for r in before] == [200, 200]
    assert b"Please enter a correct username and password" in before[-1].content
    assert at_limit.status_code == 429


def test_a_success_before_the_limit_resets_the_count(client: Client, user: User, settings: Settings) -> None:
    settings.AXES_FAILURE_LIMIT = 3
    url = reverse("login")
    _fail(client, url, user.username, 2)
    assert client.post(url, {"username": user.username, "password": PASSWORD}).status_code == 302
    client.post(reverse("logout"))

    _fail(client, url, user.username, 2)

    assert client.post(url, {"username": user.username, "password": PASSWORD}).status_code == 302
    assert _logged_in(client)


def test_a_different_username_from_the_same_address_is_not_locked(client: Client, user: User, other_user: User) -> None:
    url = reverse("login")
    _fail(client, url, user.username, 10)

    response = client.post(url, {"username": other_user.username, "password": PASSWORD})

    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(other_user.pk)


def test_the_same_username_from_another_address_is_not_locked(client: Client, user: User) -> None:
    url = reverse("login")
    _fail(client, url, user.username, 10, REMOTE_ADDR="203.0.113.7")

    assert client.post(url, {"username": user.username, "password": PASSWORD}).status_code == 302


def test_a_forged_x_forwarded_for_does_not_escape_the_lockout(client: Client, user: User) -> None:
    url = reverse("login")
    _fail(client, url, user.username, 10)

    response = client.post(url, {"username": user.username, "password": PASSWORD}, HTTP_X_FORWARDED_FOR="198.51.100.23")

    assert response.status_code == 429
    assert not _logged_in(client)


def test_the_lockout_page_is_429_under_asgi_too(async_client: AsyncClient, user: User) -> None:
    """Production serves ASGI, where axes' middleware takes its async path."""
    url = reverse("login")
    for _ in range(10):
        async_to_sync(async_client.post)(url, {"username": user.username, "password": "wrong"})

    refused = async_to_sync(async_client.post)(url, {"username": user.username, "password": PASSWORD})

    assert refused.status_code == 429
    assert b"Try again in 5 minutes" in refused.content


def test_axes_reset_username_unlocks(client: Client, user: User) -> None:
    url = reverse("login")
    _fail(client, url, user.username, 10)
    assert client.post(url, {"username": user.username, "password": PASSWORD}).status_code == 429

    call_command("axes_reset_username", user.username)

    assert client.post(url, {"username": user.username, "password": PASSWORD}).status_code == 302
    assert _logged_in(client)


def test_failed_attempts_are_listed_in_the_admin(client: Client, user: User) -> None:
    _fail(client, reverse("login"), user.username, 2)
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))

    listing = client.get(reverse("admin:axes_accessattempt_changelist"))

    assert listing.status_code == 200
    assert user.username.encode() in listing.content
