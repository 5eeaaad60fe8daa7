"""Re-enqueue predictions stuck in pending/running (after a broker outage or lost message)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError

from predictions import services


class Command(BaseCommand):
    help = "Re-send predictions that are still pending or running after --older-than seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, default=None, help="Seconds (default RECONCILE_AFTER_SECONDS)")

    def handle(self, *args: Any, **options: Any) -> None:
        older_than = options["older_than"]
        if older_than is not None and older_than < 0:
            raise CommandError(f"--older-than must be 0 or more seconds, not {older_than}.")
        try:
            sent = services.prediction_reconcile(older_than_seconds=older_than)
        except DatabaseError as error:
            raise CommandError(f"Cannot read the predictions ({error}); is the database up and migrated?") from error
        self.stdout.write(f"Re-enqueued {sent} prediction(s).")
