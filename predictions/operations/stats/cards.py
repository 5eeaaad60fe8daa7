"""A model version's card figures, as the stats page, the Models page and the admin show them."""

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


# Fewer test images than this and a test top-1 says little: the pages say so next to it.
SMALL_SAMPLE = 30


def evaluation_count(metrics: dict[str, Any], metric_name: str) -> int | None:
    """How many images the card's figure ``metric_name`` ("test_photos.top1_accuracy")
    was measured on: the ``count`` beside it; ``None`` when the card does not say."""
    node: Any = metrics
    for key in metric_name.split(".")[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    count = node.get("count") if isinstance(node, dict) else None
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def percent_text(value: float) -> str:
    """0.912 -> "91.2 %", 1.0 -> "100 %": one decimal only where it says something."""
    rounded = round(value * 100, 1)
    return f"{rounded:.0f} %" if rounded == round(rounded) else f"{rounded:.1f} %"


def _on_images(count: int | None) -> str:
    if count is None:
        return "on its test set (size not recorded)"
    caveat = ": too few to tell much" if count < SMALL_SAMPLE else ""
    return f"on {count} test image{'s' if count != 1 else ''}{caveat}"


def model_card_facts(metrics: dict[str, Any], *, classes: int) -> list[str]:
    """The model card's figures as sentences a person reads ("Top-1 100 % on 5 test
    images: too few to tell much"), not its keys (``test_photos.top1_accuracy``).
    Figures it does not know are left out, not shown raw."""
    facts = [f"Knows {classes:,} classes."] if classes else []
    top1 = evaluation_top1(metrics)
    if top1 is not None:
        name, value = top1
        source = "when it was built" if name.startswith("test_photos") else "on its held-out test set"
        facts.append(f"Top-1 {percent_text(value)} {_on_images(evaluation_count(metrics, name))} ({source}).")
        top5 = _sibling(metrics, name, ("top5", "top5_accuracy"))
        if top5 is not None:
            facts.append(f"Top-5 {percent_text(top5)} on the same images.")
    evaluation = metrics.get("evaluation")
    if isinstance(evaluation, dict) and not (top1 and top1[0].startswith("evaluation")):
        figures = [f"{label} {percent_text(float(evaluation[key]))}" for key, label in _EVALUATION_WORDS
                   if isinstance(evaluation.get(key), int | float)]  # fmt: skip
        if figures:
            facts.append(f"Latest evaluation{_split(evaluation)}: {', '.join(figures)}.")
    training = metrics.get("training")
    if isinstance(training, dict):
        accuracy = next((training[k] for k in ("val_accuracy", "accuracy") if isinstance(training.get(k), float)), None)
        if accuracy is not None:
            facts.append(f"Training ended at {percent_text(accuracy)} accuracy on its validation images.")
    if isinstance(metrics.get("parameters"), int):
        facts.append(f"{metrics['parameters'] / 1e6:.1f} million parameters.")
    if metrics.get("equivalence_checked") is True:
        facts.append("Checked to give the same answers as the reference implementation.")
    elif metrics.get("equivalence_checked") is False:
        facts.append("Not checked against the reference implementation.")
    return facts


_EVALUATION_WORDS = (("top1", "top-1"), ("top5", "top-5"), ("macro_f1", "macro F1"), ("micro_f1", "micro F1"))


def _split(evaluation: dict[str, Any]) -> str:
    split = evaluation.get("split")
    return f" on the {split} split" if isinstance(split, str) and split else ""


def _sibling(metrics: dict[str, Any], metric_name: str, names: tuple[str, ...]) -> float | None:
    node: Any = metrics
    for key in metric_name.split(".")[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    return next(
        (float(node[n]) for n in names if isinstance(node.get(n), int | float) and not isinstance(node[n], bool)), None
    )
