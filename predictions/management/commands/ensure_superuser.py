"""Create the admin account from DJANGO_SUPERUSER_USERNAME / _PASSWORD if it does not exist."""

from __future__ import annotations

import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser named by DJANGO_SUPERUSER_USERNAME unless it already exists."

    def handle(self, *args: object, **options: object) -> None:
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "admin")
        email = os.environ.get("DJANGO_SUPERUSER_EMAIL", "")
        users = get_user_model()
        if users.objects.filter(username=username).exists():
            self.stdout.write(f"Admin account '{username}' exists.")
            return
        users.objects.create_superuser(username=username, email=email, password=password)
        self.stdout.write(f"Created admin account '{username}' (password from DJANGO_SUPERUSER_PASSWORD).")
