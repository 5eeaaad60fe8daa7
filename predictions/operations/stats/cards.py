"""A model version's card figures, as the stats page and the admin show them."""

from __future__ import annotations

from typing import Any

TOP1_METRIC_NAMES = ("top1", "top1_accuracy")


def evaluation_top1(metrics: dict[str, Any], prefix: str = "") -> tuple[str, float] | None:
    """The model card's top-1 accuracy as ``(dotted name, value)``: the first figure
    named ``top1`` or ``top1_accuracy``, one measured on a test set first (fine-tuning's
    ``test...top1``, the shipped model's ``test_photos.top1_accuracy``); ``None`` when
    the card has none."""
    found: list[tuple[str, float]] = []

    def walk(node: dict[str, Any], path: str) -> None:
        for key, value in node.items():
            name = f"{path}{key}"
            if isinstance(value, dict):
                walk(value, f"{name}.")
            elif key in TOP1_METRIC_NAMES and isinstance(value, int | float) and not isinstance(value, bool):
                found.append((name, float(value)))

    walk(metrics, prefix)
    return next((item for item in found if item[0].startswith("test")), found[0] if found else None)


def flat_metrics(metrics: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Nested model-card figures as ``("test_photos.top1_accuracy", "1.0")`` rows; lists
    (per-photo results) are left out: the card's figures, not its raw data."""
    rows: list[tuple[str, str]] = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows.extend(flat_metrics(value, prefix=f"{name}."))
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        elif isinstance(value, str | int | bool):
            rows.append((name, str(value)))
    return rows
