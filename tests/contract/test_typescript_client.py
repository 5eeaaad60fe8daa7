"""The TypeScript client a user makes from the schema (openapi-typescript types and
openapi-fetch, tests/contract/ts) type-checks against the generated types and does the
whole journey (tests/contract/ts/journey.ts) against the live stack. `make clients`
installs the packages (npm ci) and generates the types into var/clients/ts.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import BASE_DIR, PHOTOS
from tests.contract.conftest import GENERATED_CLIENTS, ApiStack, damaged_png, photo_jpeg

pytestmark = [pytest.mark.contract, pytest.mark.slow]

PACKAGE = BASE_DIR / "tests" / "contract" / "ts"
BIN = PACKAGE / "node_modules" / ".bin"


@pytest.fixture(scope="module")
def toolchain() -> Path:
    if not (BIN / "tsx").exists() or not (GENERATED_CLIENTS / "ts" / "schema.d.ts").exists():
        pytest.fail("no TypeScript toolchain or generated types: run `make clients`")
    return BIN


def test_the_journey_type_checks_against_the_types_generated_from_the_schema(toolchain: Path) -> None:
    result = subprocess.run(
        [toolchain / "tsc", "--noEmit", "-p", PACKAGE], capture_output=True, text=True, timeout=300, cwd=PACKAGE
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_typescript_client_does_the_whole_journey(toolchain: Path, api_stack: ApiStack, tmp_path: Path) -> None:
    files = {"cat.jpg": "chelsea", "coffee.jpg": "coffee", "rocket.jpg": "rocket"}
    for filename, photo in files.items():
        (tmp_path / filename).write_bytes(photo_jpeg(photo))
    (tmp_path / "damaged.png").write_bytes(damaged_png())
    env = {
        **os.environ,
        "API_URL": api_stack.url,
        "API_TOKEN": api_stack.token,
        "PHOTO_DIR": str(tmp_path),
        "EXPECTED": json.dumps({filename: list(PHOTOS[photo].expected) for filename, photo in files.items()}),
    }

    result = subprocess.run(
        [toolchain / "tsx", "journey.ts"], capture_output=True, text=True, timeout=600, cwd=PACKAGE, env=env
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert "journey: 9 steps passed" in result.stdout, result.stdout
