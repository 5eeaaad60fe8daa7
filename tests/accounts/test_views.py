"""Account pages: sign-up, the profile with its API token, logging out."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token


def test_signup_logs_the_new_user_in(client: Client, db: None) -> None:
    response = client.post(
        reverse("signup"),
        {"username": "newcomer", "password1": "a-long-passphrase-42", "password2": "a-long-passphrase-42"},
        follow=True,
    )
    assert response.context["user"].username == "newcomer"


def test_profile_requires_login(client: Client, db: None) -> None:
    response = client.get(reverse("accounts:profile"))

    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_profile_creates_and_rotates_the_api_token(user_client: Client, user: User) -> None:
    page = user_client.get(reverse("accounts:profile"))
    assert reverse("accounts:profile") == "/accounts/profile/"
    assert b"You have no API token yet" in page.content

    user_client.post(reverse("accounts:profile"))
    first = Token.objects.get(user=user).key
    user_client.post(reverse("accounts:profile"))

    assert Token.objects.get(user=user).key != first
    assert Token.objects.get(user=user).key.encode() in user_client.get(reverse("accounts:profile")).content


def test_the_header_links_to_the_profile_and_logs_out(user_client: Client, user: User) -> None:
    page = user_client.get(reverse("predictions:upload"))
    assert f'href="{reverse("accounts:profile")}"'.encode() in page.content

    user_client.post(reverse("logout"))

    assert "_auth_user_id" not in user_client.session
