"""Re-enqueue predictions stuck in pending/running (after a broker outage or lost message)."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandParser

from predictions import services


class Command(BaseCommand):
    help = "Re-send predictions that are still pending or running after --older-than seconds."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", type=int, default=None, help="Seconds (default RECONCILE_AFTER_SECONDS)")

    def handle(self, *args: object, **options: object) -> None:
        sent = services.prediction_reconcile(older_than_seconds=options["older_than"])
        self.stdout.write(f"Re-enqueued {sent} prediction(s).")
