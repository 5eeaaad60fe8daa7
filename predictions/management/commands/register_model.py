"""Register one exported model folder in place (nothing is copied), optionally activating it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from ml import export, runner
from predictions.exceptions import ApplicationError
from predictions.registry import services as registry_services


class Command(BaseCommand):
    help = (
        "Register the exported model in DIR (metadata.json + labels.json + the engine's files) after "
        "loading it as the workers will; --activate makes it the one new predictions use."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, help="the exported folder, e.g. models/efficientnet_lite0/2")
        parser.add_argument("--activate", action="store_true", help="activate it once registered (recorded)")
        parser.add_argument(
            "--candidate", action="store_true", help="register it as a candidate (for evaluation), not available"
        )
        parser.add_argument(
            "--no-load",
            action="store_true",
            help="check metadata.json and labels.json only; do not load the model with MODEL_ENGINE",
        )

    def handle(
        self, *args: Any, directory: Path, activate: bool, candidate: bool, no_load: bool, **options: Any
    ) -> None:
        directory = directory.resolve()
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory.")
        try:
            if not no_load:
                # What a worker does with it: load the engine and run a batch of zeros.
                classifier = runner.Classifier(
                    directory, engine=settings.MODEL_ENGINE, threads=settings.MODEL_THREADS
                ).load()
                classifier.warmup()
            model_version = registry_services.model_version_register(model_dir=directory, candidate=candidate)
            if activate:
                model_version = registry_services.model_version_activate(model_version=model_version)
        except export.ModelLoadError as error:
            raise CommandError(f"Not registered: {error}") from error
        except ApplicationError as error:
            raise CommandError(error.message) from error
        except DatabaseError as error:
            raise CommandError(f"Cannot register the model ({error}); is the database up and migrated?") from error
        self.stdout.write(
            f"Registered {model_version.name} v{model_version.version} ({model_version.status}, "
            f"{len(model_version.classes)} classes) at {model_version.path}"
        )
