"""Export users' reviews (corrections and confirmations) as a class-per-folder dataset
for the next fine-tune."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictions.exceptions import ApplicationError
from predictions.models import ModelVersion
from predictions.registry import selectors as registry_selectors
from predictions.reviews import export as review_export
from predictions.reviews import selectors as review_selectors


class Command(BaseCommand):
    help = (
        "Copy every reviewed image (corrected, or confirmed by its owner; --corrections-only leaves "
        "the confirmed out) into DIR/<right label>/<prediction id>.<ext> and write DIR/manifest.csv "
        "(label, class_id, what the model said, model version, review: corrected or confirmed, ...): the layout "
        "`python -m training.finetune --data DIR` reads. A file already in DIR that differs is never "
        "replaced unless --overwrite is given; an unchanged re-run writes nothing new."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", type=Path, help="where the dataset goes (created if missing)")
        parser.add_argument(
            "--model-version",
            metavar="NAME:VERSION",
            help="only corrections of this version's predictions, e.g. efficientnet_lite0:1",
        )
        parser.add_argument(
            "--overwrite", action="store_true", help="replace files in DIR that differ (they are counted)"
        )
        parser.add_argument(
            "--corrections-only",
            action="store_true",
            help="leave out the predictions their owners confirmed (by default they are labelled data too)",
        )

    def handle(
        self,
        *args: Any,
        directory: Path,
        model_version: str | None,
        overwrite: bool,
        corrections_only: bool,
        **options: Any,
    ) -> None:
        version = None
        if model_version:
            name, _, number = model_version.partition(":")
            if not name or not number:
                raise CommandError("--model-version is NAME:VERSION, e.g. efficientnet_lite0:1.")
            try:
                version = registry_selectors.model_version_get(name=name, version=number)
            except ModelVersion.DoesNotExist as error:
                raise CommandError(f"No model version {model_version} is registered.") from error
        if directory.exists() and not directory.is_dir():
            raise CommandError(f"{directory} is not a directory.")
        corrections = review_selectors.correction_list(model_version=version, corrections_only=corrections_only)
        try:
            export = review_export.correction_export_directory(
                corrections=corrections, directory=directory, overwrite=overwrite
            )
        except ApplicationError as error:
            raise CommandError(error.message) from error
        labels = {path.split("/", 1)[0] for path, _ in export.files}
        self.stdout.write(
            f"Exported {len(export.files)} image(s) ({len(export.files) - export.confirmed} corrected, "
            f"{export.confirmed} confirmed) in {len(labels)} label folder(s) to {directory}"
            f" with manifest.csv" + (f"; {export.replaced} file(s) replaced." if export.replaced else ".")
        )
