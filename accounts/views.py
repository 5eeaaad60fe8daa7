"""Account pages: parse input, call a service, render."""

from __future__ import annotations

import math
from typing import Any

from axes.helpers import get_cool_off
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.contrib.auth.forms import UserCreationForm
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from rest_framework.authtoken.models import Token

from . import services
from .forms import PasswordChangeForm
from .http import AuthenticatedHttpRequest


def signup(request: HttpRequest) -> HttpResponse:
    form: UserCreationForm[User] = UserCreationForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.save()
        # Two backends are configured (axes, then ModelBackend): name the one that logs in.
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form})


@login_required
def profile(request: AuthenticatedHttpRequest) -> HttpResponse:
    if request.method == "POST":
        had_token = Token.objects.filter(user=request.user).exists()
        services.token_rotate(user=request.user)
        if had_token:
            messages.success(request, "A new API token was created; the old one no longer works.")
        else:
            messages.success(request, "Your API token was created.")
        return redirect("accounts:profile")
    token = Token.objects.filter(user=request.user).first()
    return render(request, "accounts/profile.html", {"token": token})


class PasswordChangeView(auth_views.PasswordChangeView):
    """Django's password change page with ``accounts.forms.PasswordChangeForm``: a wrong
    old password is a failed login, locked out after ``LOGIN_FAILURE_LIMIT`` of them."""

    form_class = PasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}


def lockout(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
    """What a locked-out login attempt gets (``AXES_LOCKOUT_CALLABLE``), on every login
    page: 429 and when to try again. Axes passes the original response and credentials,
    in an order that differs between its sync and async paths; neither is needed here."""
    cool_off = get_cool_off(request)
    minutes = math.ceil(cool_off.total_seconds() / 60) if cool_off else None
    return render(request, "accounts/lockout.html", {"minutes": minutes}, status=429)
