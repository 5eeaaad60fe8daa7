"""Register the exported models found under MODEL_DIR (and activate the default if none is)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from predictions import selectors, services


class Command(BaseCommand):
    help = "Register model versions found under MODEL_DIR; activate MODEL_NAME if none is active."

    def handle(self, *args: object, **options: object) -> None:
        found = services.model_version_sync()
        active = selectors.model_version_active()
        self.stdout.write(f"{len(found)} model version(s) on disk; active: {active or 'none'}")
