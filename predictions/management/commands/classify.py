"""Classify local files or folders with the model runner: no web server or worker needed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from predictions import services
from predictions.exceptions import ApplicationError
from predictions.inference import ENGINES, MAX_BATCH, ModelLoadError, get_classifier

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".bmp", ".tif", ".tiff"}


class Command(BaseCommand):
    help = "Classify image files or folders with the active model and print the top-k labels."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", help="Image files or folders (searched recursively)")
        parser.add_argument("--top-k", type=int, default=settings.DEFAULT_TOP_K)
        parser.add_argument("--json", action="store_true", help="One JSON object per line per image")
        parser.add_argument("--engine", choices=ENGINES, default=settings.MODEL_ENGINE)
        parser.add_argument("--model", help="Model directory (default: the active model version)")

    def handle(self, *args: object, **options: object) -> None:
        files = list(_expand(Path(p) for p in options["paths"]))
        if not files:
            raise CommandError("No files found.")
        model_dir = options["model"]
        if not model_dir:
            try:
                model_dir = services.model_version_get_or_sync_active().path
            except ApplicationError as error:
                raise CommandError(error.message) from error
        try:
            classifier = get_classifier(model_dir, engine=options["engine"], threads=settings.MODEL_THREADS)
        except ModelLoadError as error:
            raise CommandError(str(error)) from error
        progress = _progress(len(files)) if sys.stderr.isatty() and options["json"] else None
        for start in range(0, len(files), MAX_BATCH):
            batch = files[start : start + MAX_BATCH]
            results = classifier.classify([str(f) for f in batch], top_k=options["top_k"])
            for path, result in zip(batch, results, strict=True):
                self._print(path, result, as_json=bool(options["json"]))
            if progress:
                progress.update(len(batch))
        if progress:
            progress.close()

    def _print(self, path: Path, result, *, as_json: bool) -> None:
        if as_json:
            line: dict[str, object] = {"file": str(path)}
            if result.error:
                line["error"] = result.error
            else:
                line["predictions"] = [
                    {"label": p.label, "class_id": p.class_id, "score": round(p.score, 6)} for p in result.predictions
                ]
                line["timings_ms"] = {
                    "preprocess": round(result.preprocess_ms, 3),
                    "inference": round(result.inference_ms, 3),
                }
            self.stdout.write(json.dumps(line))
            return
        if result.error:
            self.stdout.write(self.style.ERROR(f"{path}: {result.error}"))
            return
        self.stdout.write(self.style.SUCCESS(str(path)))
        for p in result.predictions:
            self.stdout.write(f"  {p.score:6.1%}  {p.label} ({p.class_id})")


def _expand(paths):
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def _progress(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr)
