"""Account forms that differ from Django's own."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.contrib.auth.forms import PasswordChangeForm as DjangoPasswordChangeForm
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.http import HttpRequest


class PasswordChangeForm(DjangoPasswordChangeForm):
    """Django's form (old password, new twice, the validators), with the old password
    checked by ``authenticate()`` instead of ``check_password()``: a wrong one counts as a
    failed login for this username and address (django-axes), so guesses here meet the
    same lockout as on the login pages instead of being unlimited."""

    def __init__(self, user: User, *args: Any, request: HttpRequest, **kwargs: Any) -> None:
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self) -> str:
        old_password: str = self.cleaned_data["old_password"]
        checked = authenticate(self.request, username=self.user.get_username(), password=old_password)
        if checked is None or checked.pk != self.user.pk:
            raise ValidationError(self.error_messages["password_incorrect"], code="password_incorrect")
        return old_password
