"""The documentation tells the truth about the code: the committed OpenAPI schema that the
API reference page is rendered from is the one the API views describe, and the README's
map points at pages that exist."""

from __future__ import annotations

import re
from pathlib import Path

from django.core.management import call_command

BASE_DIR = Path(__file__).resolve().parent.parent
COMMITTED_SCHEMA = BASE_DIR / "docs" / "reference" / "openapi.yaml"


def test_the_api_reference_is_rendered_from_the_schema_the_code_serves(tmp_path: Path) -> None:
    live_schema = tmp_path / "openapi.yaml"
    # The same command `make docs` runs to write the committed file.
    call_command("spectacular", "--file", str(live_schema), "--validate", "--fail-on-warn")

    assert COMMITTED_SCHEMA.read_text() == live_schema.read_text(), (
        "docs/reference/openapi.yaml differs from the API the code serves: run `make docs` and commit it"
    )


def test_every_link_in_the_readme_to_a_file_of_the_project_finds_it() -> None:
    readme = (BASE_DIR / "README.md").read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", readme)
    local = [target.split("#")[0] for target in targets if not re.match(r"[a-z]+:", target)]

    assert local, "the README links to no page of the docs"
    missing = [target for target in local if target and not (BASE_DIR / target).exists()]
    assert missing == []
