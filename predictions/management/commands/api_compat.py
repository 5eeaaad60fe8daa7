"""``manage.py api_compat``: the breaking-change check of the API (docs/api-compatibility.md).

Compares the schema the code serves with the baseline (the schema of the last release,
``docs/reference/openapi-baseline.yaml``) and fails when a difference that breaks a
client is not acknowledged in the changelog's "Unreleased" section, quoted as the check
prints it. `make api-compat` and CI run it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from drf_spectacular.settings import spectacular_settings

from predictions.api.compat import Change, schema_changes

BASELINE = Path(settings.BASE_DIR) / "docs" / "reference" / "openapi-baseline.yaml"
CHANGELOG = Path(settings.BASE_DIR) / "docs" / "changelog.md"


def served_schema() -> dict[str, Any]:
    """The schema ``/api/v1/schema/`` serves, as plain data (lazy translations as text)."""
    generator = spectacular_settings.DEFAULT_GENERATOR_CLASS()
    schema: dict[str, Any] = json.loads(json.dumps(generator.get_schema(request=None, public=True), default=str))
    return schema


def acknowledged(changelog: str) -> set[str]:
    """The change ids quoted (in backticks) in the changelog's "## Unreleased" section."""
    match = re.search(r"^## Unreleased\b.*?(?=^## |\Z)", changelog, flags=re.MULTILINE | re.DOTALL)
    return set(re.findall(r"`([^`]+)`", match.group(0))) if match else set()


class Command(BaseCommand):
    help = "Fail on a breaking API change (against the baseline schema) the changelog does not acknowledge."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--baseline", type=Path, default=BASELINE, help="the schema of the last release")
        parser.add_argument("--changelog", type=Path, default=CHANGELOG, help="its Unreleased section acknowledges")

    def handle(self, *args: Any, baseline: Path, changelog: Path, **options: Any) -> None:
        changes = schema_changes(yaml.safe_load(baseline.read_text()), served_schema())
        acks = acknowledged(changelog.read_text())
        additions = [change for change in changes if not change.breaking]
        breaking = [change for change in changes if change.breaking]
        unannounced = [change for change in breaking if change.id not in acks]
        self.stdout.write(f"API changes since {baseline.name}: {len(additions)} compatible, {len(breaking)} breaking")
        for change in additions:
            self.stdout.write(f"  + {change}")
        for change in breaking:
            self.stdout.write(f"  {'!' if change in unannounced else '~'} {change}")
        if unannounced:
            raise CommandError(_unannounced_message(unannounced, changelog))
        self.stdout.write(self.style.SUCCESS("No unannounced breaking change."))


def _unannounced_message(unannounced: list[Change], changelog: Path) -> str:
    ids = dict.fromkeys(change.id for change in unannounced)  # one line per id, in order
    quoted = "\n".join(f"  - `{change_id}`" for change_id in ids)
    return (
        f"{len(unannounced)} breaking API change(s) not in the Unreleased section of {changelog.name}. "
        "Keep the old form working instead (docs/api-compatibility.md), or announce each one there, "
        f"quoted as is:\n{quoted}"
    )
