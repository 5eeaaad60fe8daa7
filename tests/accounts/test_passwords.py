"""Passwords and what hangs on them: wrong old passwords on the password page are failed
logins (locked out like on the login pages), a changed password replaces the API token
wherever it is changed, and an operator sees lockouts in the admin and lifts them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts import services
from tests.factories import UserFactory

PASSWORD = "correct-horse-battery"  # UserFactory's
NEW_PASSWORD = "a-new-Staple-7421"


def _change(client: Client, old: str) -> int:
    response = client.post(
        reverse("password_change"),
        {"old_password": old, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD},
    )
    return response.status_code


def _api_answers(key: str) -> int:
    return APIClient().get("/api/v1/predictions/", HTTP_AUTHORIZATION=f"Token {key}").status_code


def test_wrong_old_passwords_on_the_password_page_are_locked_out(user_client: Client, user: User) -> None:
    attempts = [_change(user_client, f"guess-{number}") for number in range(5)]

    # The form says the old password is wrong, until the fifth: that one locks out, like a login page.
    assert attempts == [200, 200, 200, 200, 429]
    assert _change(user_client, PASSWORD) == 429  # the right one too, now
    user.refresh_from_db()
    assert user.check_password(PASSWORD)


def test_the_lockout_from_the_password_page_holds_at_the_login_page(user_client: Client, user: User) -> None:
    for number in range(5):
        _change(user_client, f"guess-{number}")
    login = Client()

    response = login.post(reverse("login"), {"username": user.username, "password": PASSWORD})

    assert response.status_code == 429


def test_the_right_old_password_changes_it(user_client: Client, user: User) -> None:
    assert _change(user_client, PASSWORD) == 302

    user.refresh_from_db()
    assert user.check_password(NEW_PASSWORD)


def test_a_password_change_replaces_the_api_token(user_client: Client, user: User) -> None:
    old = services.token_rotate(user=user)
    assert _api_answers(old) == 200

    assert _change(user_client, PASSWORD) == 302

    new = Token.objects.get(user=user).key
    assert new != old
    assert _api_answers(old) == 401
    assert _api_answers(new) == 200
    page = user_client.get(reverse("password_change_done")).content.decode()
    assert "Your API token was replaced too" in page


def test_a_password_set_in_the_admin_replaces_the_api_token(client: Client, user: User) -> None:
    old = services.token_rotate(user=user)
    client.force_login(UserFactory.create(is_staff=True, is_superuser=True))

    response = client.post(
        reverse("admin:auth_user_password_change", args=[user.pk]),
        {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD, "usable_password": "true"},
    )

    assert response.status_code == 302
    assert _api_answers(old) == 401
    assert Token.objects.get(user=user).key != old


def test_a_password_set_from_the_shell_or_a_command_replaces_the_api_token(user: User) -> None:
    old = services.token_rotate(user=user)

    user.set_password(NEW_PASSWORD)
    user.save()  # what `manage.py changepassword` does

    assert _api_answers(old) == 401
    assert Token.objects.filter(user=user).exists()


def test_a_user_without_a_token_gets_none_from_a_password_change(user_client: Client, user: User) -> None:
    assert _change(user_client, PASSWORD) == 302

    assert not Token.objects.filter(user=user).exists()


def test_logging_out_leaves_the_api_token_valid(user_client: Client, user: User) -> None:
    """Documented in docs/security.md: a token is the API's credential, not the browser session's."""
    key = services.token_rotate(user=user)

    user_client.post(reverse("logout"))

    assert _api_answers(key) == 200


@pytest.fixture
def locked_out(client: Client, user: User) -> User:
    """``user`` locked out at the test client's address by five wrong passwords."""
    for _ in range(5):
        client.post(reverse("login"), {"username": user.username, "password": "wrong"})
    assert client.post(reverse("login"), {"username": user.username, "password": PASSWORD}).status_code == 429
    return user


def test_the_admin_shows_until_when_a_lockout_holds_and_lifts_it(client: Client, locked_out: User) -> None:
    operator = Client()
    operator.force_login(UserFactory.create(is_staff=True, is_superuser=True))
    changelist = reverse("admin:axes_accessattempt_changelist")

    listing = operator.get(changelist).content.decode()
    assert locked_out.username in listing
    assert "Locked out until" in listing
    assert 'value="lift_lockout"' in listing

    from axes.models import AccessAttempt

    attempt = AccessAttempt.objects.get(username=locked_out.username)
    operator.post(changelist, {"action": "lift_lockout", "_selected_action": [attempt.pk]})

    assert client.post(reverse("login"), {"username": locked_out.username, "password": PASSWORD}).status_code == 302


def test_staff_without_the_permission_cannot_lift_a_lockout(client: Client, locked_out: User) -> None:
    from axes.models import AccessAttempt

    staff = Client()
    staff.force_login(UserFactory.create(is_staff=True))
    attempt = AccessAttempt.objects.get(username=locked_out.username)

    staff.post(
        reverse("admin:axes_accessattempt_changelist"), {"action": "lift_lockout", "_selected_action": [attempt.pk]}
    )

    assert client.post(reverse("login"), {"username": locked_out.username, "password": PASSWORD}).status_code == 429
