"""Run the learning loop's step now, in this process (docs/model/learning.md)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictions.learning import selectors as learning_selectors
from predictions.learning import services as learning_services


class Command(BaseCommand):
    help = (
        "Show the learning loop's state; with --now, run one step at once and wait for it: decide the A/B test "
        "in progress, or start a cycle when enough reviews are in and train it here (synchronously)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--now", action="store_true", help="run one step now (trains in this process)")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["now"]:
            cycle = learning_selectors.learning_cycle_last()
            self.stdout.write(f"{cycle}: {cycle.reason}" if cycle else "No learning cycle yet.")
            return
        outcome = learning_services.learning_tick()
        self.stdout.write(outcome.message)
        if outcome.queued and outcome.cycle is not None:
            cycle = learning_services.learning_cycle_train(cycle_id=outcome.cycle.pk)
            if cycle is None:
                raise CommandError("Another process took this cycle's training.")
            self.stdout.write(f"{cycle}: {cycle.reason}")
