"""Classify local files or folders with the model runner: no web server, worker or
database needed (the model is read from disk)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from ml.cache import get_classifier
from ml.engines import ENGINES
from ml.export import ModelLoadError, newest_model_dir
from ml.runner import MAX_BATCH, Classifier, ImageResult
from ml.tta import tta_for_run

if TYPE_CHECKING:
    from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".avif", ".gif", ".bmp", ".tif", ".tiff"}


class Command(BaseCommand):
    help = (
        "Classify image files or folders and print the top-k labels (and, for a multi-label model, every "
        "label whose score reaches its threshold). Reads the model from disk "
        "(--model, or the newest under MODEL_DIR); needs no database, web server or worker."
    )
    # The service's checks (task time limits and the like) do not concern a local run.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("paths", nargs="+", help="Image files or folders (searched recursively)")
        parser.add_argument("--top-k", type=int, default=settings.DEFAULT_TOP_K)
        parser.add_argument("--json", action="store_true", help="One JSON object per line per image")
        parser.add_argument("--engine", choices=ENGINES, default=settings.MODEL_ENGINE)
        parser.add_argument(
            "--tta",
            action="store_true",
            help="Test-time augmentation for this run: the version's own setting, else flip x 5 crops (ml.tta)",
        )
        parser.add_argument(
            "--model",
            help="Exported model directory (default: the newest under MODEL_DIR, MODEL_NAME preferred)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        top_k = int(options["top_k"])
        if not 1 <= top_k <= settings.MAX_TOP_K:
            raise CommandError(f"--top-k must be between 1 and {settings.MAX_TOP_K}, not {top_k}.")
        paths = [Path(p) for p in options["paths"]]
        missing = [str(path) for path in paths if not path.exists()]
        if missing:
            raise CommandError(f"No such file or folder: {', '.join(missing)}")
        files = list(_expand(paths))
        if not files:
            raise CommandError(f"No image files found (looked for {', '.join(sorted(IMAGE_SUFFIXES))}).")
        classifier = self._classifier(options["model"], engine=str(options["engine"]), tta=bool(options["tta"]))
        progress = _progress(len(files)) if sys.stderr.isatty() and options["json"] else None
        failed = 0
        for start in range(0, len(files), MAX_BATCH):
            batch = files[start : start + MAX_BATCH]
            results = classifier.classify([str(f) for f in batch], top_k=top_k)
            for path, result in zip(batch, results, strict=True):
                self._print(path, result, as_json=bool(options["json"]))
                failed += bool(result.error)
            if progress:
                progress.update(len(batch))
        if progress:
            progress.close()
        if failed:
            raise CommandError(f"{failed} of {len(files)} file(s) could not be classified (see above).")

    def _classifier(self, model: object, *, engine: str, tta: bool = False) -> Classifier:
        """The runner for ``--model``, else the newest model on disk: never the database.
        With ``tta`` a classifier of its own for this run (the cached one keeps the version's setting)."""
        model_dir = (
            Path(str(model)) if model else newest_model_dir(root=settings.MODEL_DIR, prefer_name=settings.MODEL_NAME)
        )
        if model_dir is None:
            raise CommandError(
                f"No exported model under MODEL_DIR ({settings.MODEL_DIR}): run `make model`, or pass --model DIR."
            )
        try:
            if tta:
                return Classifier(
                    model_dir, engine=engine, threads=settings.MODEL_THREADS, tta=tta_for_run(model_dir)
                ).load()
            return get_classifier(model_dir, engine=engine, threads=settings.MODEL_THREADS)
        except (ModelLoadError, ValueError) as error:  # ValueError: a malformed "tta" setting
            raise CommandError(str(error)) from error

    def _print(self, path: Path, result: ImageResult, *, as_json: bool) -> None:
        if as_json:
            line: dict[str, object] = {"file": str(path)}
            if result.error:
                line["error"] = result.error
            else:
                line["predictions"] = [
                    {"label": p.label, "class_id": p.class_id, "score": round(p.score, 6)} for p in result.predictions
                ]
                if result.multi_label:
                    line["labels"] = [
                        {"label": p.label, "class_id": p.class_id, "score": round(p.score, 6)} for p in result.labels
                    ]
                if result.uncertainty is not None:
                    line["uncertainty"] = {
                        "entropy": round(result.uncertainty.entropy, 6),
                        "margin": round(result.uncertainty.margin, 6),
                    }
                    line["uncertain"] = result.uncertainty.uncertain
                line["timings_ms"] = {
                    "preprocess": round(result.preprocess_ms, 3),
                    "inference": round(result.inference_ms, 3),
                }
            self.stdout.write(json.dumps(line))
            return
        if result.error:
            self.stdout.write(self.style.ERROR(f"{path}: {result.error}"))
            return
        not_sure = result.uncertainty is not None and result.uncertainty.uncertain
        self.stdout.write(self.style.SUCCESS(str(path)) + (" (not sure; the candidates:)" if not_sure else ""))
        for p in result.predictions:
            self.stdout.write(f"  {p.score:6.1%}  {p.label} ({p.class_id})")
        if result.multi_label:
            # Every class whose score reached its threshold, some possibly below the top-k.
            self.stdout.write(f"  labels: {', '.join(p.label for p in result.labels) or 'none'}")


def _expand(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            yield path


def _progress(total: int) -> tqdm[NoReturn]:
    from tqdm import tqdm

    return tqdm(total=total, unit="img", file=sys.stderr)
