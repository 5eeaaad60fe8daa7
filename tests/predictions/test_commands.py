"""CLI entry points: classify local files without a server, worker or database; no
command answers a user's mistake with a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pytest_django import Settings

from tests.conftest import BASE_DIR, CAT_CLASSES, PHOTOS


def test_classify_prints_json_per_image_and_goes_on_after_a_bad_file(
    db: None, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(PHOTOS["chelsea"].path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not really a jpeg")

    with pytest.raises(CommandError, match="1 of 3 file"):  # exit status 1, after every file
        call_command("classify", str(folder), str(PHOTOS["coffee"].path), "--json", "--top-k", "3")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_file = {line["file"].rsplit("/", 1)[-1]: line for line in lines}
    assert set(by_file) == {"cat.png", "broken.jpg", "coffee.png"}
    assert "error" in by_file["broken.jpg"]
    assert by_file["cat.png"]["predictions"][0]["class_id"] in CAT_CLASSES
    assert len(by_file["coffee.png"]["predictions"]) == 3
    assert set(by_file["coffee.png"]["timings_ms"]) == {"preprocess", "inference"}


def test_classify_with_the_tflite_engine_in_plain_text(
    db: None, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    call_command("classify", str(PHOTOS["coffee"].path), "--engine", "tflite")

    assert "espresso (n07920052)" in capsys.readouterr().out


def _manage(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=BASE_DIR, env=env or os.environ.copy(), capture_output=True, text=True
    )


@pytest.fixture
def no_database_env(tmp_path: Path) -> dict[str, str]:
    """A clone where only `make model` ran: any database access fails."""
    return {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite3'}"}


def test_classify_needs_no_database(model_dir: Path, no_database_env: dict[str, str]) -> None:
    result = _manage("classify", str(PHOTOS["chelsea"].path), "--top-k", "3", env=no_database_env)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert any(f"({class_id})" in result.stdout for class_id in CAT_CLASSES), result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/no/such/photo.jpg"], "No such file or folder: /no/such/photo.jpg"),
        (["{photo}", "--model", "/no/such/model"], "No exported model at /no/such/model"),
        (["{photo}", "--top-k", "0"], "--top-k must be between 1 and 20"),
        (["{photo}", "--top-k", "many"], "invalid int value"),
        (["{text}"], "1 of 1 file(s) could not be classified"),
    ],
    ids=["missing-path", "bad-model-dir", "top-k-zero", "top-k-not-a-number", "not-an-image"],
)
def test_classify_refuses_a_user_error_with_a_message_not_a_traceback(
    model_dir: Path, no_database_env: dict[str, str], tmp_path: Path, args: list[str], message: str
) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("not an image")
    args = [arg.format(photo=PHOTOS["chelsea"].path, text=text) for arg in args]

    result = _manage("classify", *args, env=no_database_env)

    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_classify_by_default_reads_the_newest_model_on_disk(
    model_dir: Path, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml.export import newest_model_dir

    for name, version in (("efficientnet_lite0", "2"), ("efficientnet_lite0", "10"), ("other", "99")):
        (tmp_path / name / version).mkdir(parents=True)
        (tmp_path / name / version / "metadata.json").write_text("{}")

    assert newest_model_dir(root=tmp_path, prefer_name="efficientnet_lite0") == tmp_path / "efficientnet_lite0" / "10"
    assert newest_model_dir(root=tmp_path, prefer_name="absent") == tmp_path / "other" / "99"
    assert newest_model_dir(root=tmp_path / "empty", prefer_name="absent") is None

    settings.MODEL_DIR = tmp_path / "empty"
    with pytest.raises(CommandError, match="No exported model under MODEL_DIR"):
        call_command("classify", str(PHOTOS["chelsea"].path))


@pytest.mark.parametrize(
    ("command", "message"),
    [
        (["reconcile", "--older-than", "-1"], "--older-than must be 0 or more seconds"),
        (["reconcile"], "is the database up and migrated?"),
        (["sync_models"], "is the database up and migrated?"),
        (["stats_bench", "--users", "1"], "Refusing to fill database"),
    ],
    ids=["reconcile-negative-age", "reconcile-no-database", "sync-models-no-database", "stats-bench-not-a-bench-db"],
)
def test_other_commands_refuse_user_errors_without_a_traceback(
    no_database_env: dict[str, str], command: list[str], message: str
) -> None:
    result = _manage(*command, env=no_database_env)

    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_stats_bench_refuses_too_few_users(tmp_path: Path) -> None:
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'stats-bench.sqlite3'}"}

    result = _manage("stats_bench", "--users", "1", env=env)

    assert result.returncode == 1
    assert "--users must be at least 2, not 1" in result.stderr
    assert "Traceback" not in result.stderr
