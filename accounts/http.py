"""Request types for views only a signed-in user reaches (``login_required``, DRF's
``IsAuthenticated``): there ``request.user`` is a ``User``, never ``AnonymousUser``.

For annotations only (the pattern django-stubs documents): at run time they are the
plain request classes, so nothing about a request changes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.http import HttpRequest
from rest_framework.request import Request

if TYPE_CHECKING:
    from django.contrib.auth.models import AnonymousUser, User

    class AuthenticatedHttpRequest(HttpRequest):
        user: User

    class AuthenticatedRequest(Request):
        @property
        def user(self) -> User: ...
        @user.setter
        def user(self, value: User | AnonymousUser) -> None: ...

else:
    AuthenticatedHttpRequest = HttpRequest
    AuthenticatedRequest = Request
