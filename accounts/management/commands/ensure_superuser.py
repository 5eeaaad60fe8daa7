"""Create the admin account from DJANGO_SUPERUSER_USERNAME / _PASSWORD / _EMAIL if it
does not exist. Each may also come from a file named by NAME_FILE (Docker secrets, e.g.
DJANGO_SUPERUSER_PASSWORD_FILE=/run/secrets/admin_password), as every setting does."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from accounts import services
from imagerec.env import env


class Command(BaseCommand):
    help = (
        "Create the superuser named by DJANGO_SUPERUSER_USERNAME unless it already exists. With DEBUG off "
        "its password (DJANGO_SUPERUSER_PASSWORD or DJANGO_SUPERUSER_PASSWORD_FILE) must be set and not 'admin'."
    )

    def handle(self, *args: object, **options: object) -> None:
        try:
            username = env.str("DJANGO_SUPERUSER_USERNAME", default="admin")
            email = env.str("DJANGO_SUPERUSER_EMAIL", default="")
            password = env.str("DJANGO_SUPERUSER_PASSWORD", default="")
        except ImproperlyConfigured as error:  # e.g. an unreadable *_FILE
            raise CommandError(str(error)) from None
        if not password and settings.DEBUG:
            password = services.DEVELOPMENT_SUPERUSER_PASSWORD
        try:
            created = services.superuser_ensure(username=username, email=email, password=password)
        except services.SuperuserPasswordRefused as refused:
            raise CommandError(f"{refused}: set DJANGO_SUPERUSER_PASSWORD or DJANGO_SUPERUSER_PASSWORD_FILE.") from None
        except DatabaseError as error:
            raise CommandError(
                f"The database cannot be used ({type(error).__name__}); is it running, and has `manage.py migrate` run?"
            ) from None
        if created:
            self.stdout.write(f"Created admin account '{username}'.")
        else:
            self.stdout.write(f"Admin account '{username}' exists.")
