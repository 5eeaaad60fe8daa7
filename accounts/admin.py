"""Failed logins in the admin: django-axes' list of attempts, with when a lockout ends and
an action that lifts it."""

from __future__ import annotations

from axes.admin import AccessAttemptAdmin as AxesAccessAttemptAdmin
from axes.models import AccessAttempt
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from . import services

admin.site.unregister(AccessAttempt)


@admin.register(AccessAttempt)
class AccessAttemptAdmin(AxesAccessAttemptAdmin):
    """Axes' list (username, address, failures, "Locked Out"), plus until when each
    lockout holds and "Lift the lockout" for accounts allowed to delete attempts
    (superusers, or a group given "axes | access attempt | Can delete")."""

    actions = [*AxesAccessAttemptAdmin.actions, "lift_lockout"]

    def get_list_display(self, request: HttpRequest) -> list[str]:
        return [*super().get_list_display(request), "locked_until"]

    @admin.display(description="Locked out until")
    def locked_until(self, attempt: AccessAttempt) -> str:
        end = services.lockout_end(attempt=attempt)
        return timezone.localtime(end).strftime("%Y-%m-%d %H:%M:%S") if end is not None else ""

    @admin.action(description="Lift the lockout of the selected username and address pairs", permissions=["delete"])
    def lift_lockout(self, request: HttpRequest, queryset: QuerySet[AccessAttempt]) -> None:
        for attempt in queryset:
            services.lockout_lift(username=attempt.username, ip_address=attempt.ip_address)
            self.message_user(
                request, f"{attempt.username} can log in from {attempt.ip_address} again.", messages.SUCCESS
            )
