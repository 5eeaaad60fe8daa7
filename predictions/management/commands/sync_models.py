"""Register the exported models found under MODEL_DIR (and activate the default if none is)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from predictions.exceptions import ApplicationError
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services


class Command(BaseCommand):
    help = "Register model versions found under MODEL_DIR; activate MODEL_NAME if none is active."

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            found = registry_services.model_version_sync()
            active = registry_selectors.model_version_active()
        except ApplicationError as error:
            raise CommandError(error.message) from error
        except DatabaseError as error:
            raise CommandError(f"Cannot register the models ({error}); is the database up and migrated?") from error
        self.stdout.write(f"{len(found)} model version(s) on disk; active: {active or 'none'}")
