"""What happens when a password changes, wherever it is changed."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, User

from . import services


class ApiTokenRotation:
    """Not a rule for passwords but the one hook every password change goes through:
    Django calls ``password_changed()`` of each entry of ``AUTH_PASSWORD_VALIDATORS``
    whenever a user is saved with a new password (the password page, the admin's
    "change password", ``manage.py changepassword``, a reset). A changed password
    replaces the user's API token, so a token someone else copied stops working with it.
    It never refuses a password."""

    def validate(self, password: str, user: AbstractBaseUser | None = None) -> None:
        return None

    def get_help_text(self) -> str:
        return "Changing your password later also replaces your API token."

    def password_changed(self, password: str, user: AbstractBaseUser | None = None) -> None:
        if isinstance(user, User) and user.pk is not None:
            services.token_rotate_after_password_change(user=user)
