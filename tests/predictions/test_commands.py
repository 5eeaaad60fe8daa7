"""CLI entry points: classify local files without a server or worker."""

from __future__ import annotations

import json

from django.core.management import call_command

from tests.conftest import CAT_CLASSES, PHOTOS


def test_classify_prints_json_per_image_and_goes_on_after_a_bad_file(db, model_dir, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.png").write_bytes(PHOTOS["chelsea"].path.read_bytes())
    (folder / "broken.jpg").write_bytes(b"not really a jpeg")

    call_command("classify", str(folder), str(PHOTOS["coffee"].path), "--json", "--top-k", "3")

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_file = {line["file"].rsplit("/", 1)[-1]: line for line in lines}
    assert set(by_file) == {"cat.png", "broken.jpg", "coffee.png"}
    assert "error" in by_file["broken.jpg"]
    assert by_file["cat.png"]["predictions"][0]["class_id"] in CAT_CLASSES
    assert len(by_file["coffee.png"]["predictions"]) == 3
    assert set(by_file["coffee.png"]["timings_ms"]) == {"preprocess", "inference"}


def test_classify_with_the_tflite_engine_in_plain_text(db, model_dir, capsys):
    call_command("classify", str(PHOTOS["coffee"].path), "--engine", "tflite")

    assert "espresso (n07920052)" in capsys.readouterr().out
