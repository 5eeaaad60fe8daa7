"""A finished prediction's outcome, as the worker announces it to waiting requests.

The worker's announcement (``events.prediction_final_publish``, sent once the rows are
committed) carries what the worker wrote: status, result, error, timings and the model
version. A request that already holds the row (the submission that wrote it, or a poll
that read it before waiting) applies it to that row and answers without reading the
row again: one query less per waiting request (``selectors.predictions_wait``). Any
announcement without it (``"final"``, e.g. ``prediction_fail``'s) means: read the row.

The values are those the worker stored, so the answer is the one a read would give
(``tests/predictions/test_outcomes.py`` holds the two equal).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from .models import FINAL_STATUSES, ModelVersion, Prediction

_TEXT = ("status", "label", "class_id", "error")
_FLOATS = ("confidence", "entropy", "margin", "queue_ms", "preprocess_ms", "inference_ms", "total_ms")
_TIMES = ("started_at", "completed_at")


def outcome_message(prediction: Prediction) -> str:
    """The announcement of a final, stored ``prediction``: its outcome as JSON."""
    version = prediction.model_version
    body: dict[str, Any] = {name: str(getattr(prediction, name)) for name in _TEXT}
    body |= {name: _float(getattr(prediction, name)) for name in _FLOATS}
    body |= {name: _time(getattr(prediction, name)) for name in _TIMES}
    body["top_predictions"] = prediction.top_predictions
    body["uncertain"] = None if prediction.uncertain is None else bool(prediction.uncertain)
    body["cached"] = bool(prediction.cached)
    body["model_version"] = None if version is None else [version.pk, version.name, version.version]
    return json.dumps(body, separators=(",", ":"))


def outcome_apply(prediction: Prediction, message: str) -> bool:
    """Give ``prediction`` (in memory) the announced outcome; ``False`` when the message
    carries none (a bare "final": the row must be read)."""
    try:
        body = json.loads(message)
    except ValueError:
        return False
    if not isinstance(body, dict) or body.get("status") not in FINAL_STATUSES:
        return False
    for name in (*_TEXT, *_FLOATS, "top_predictions", "uncertain", "cached"):
        setattr(prediction, name, body[name])
    for name in _TIMES:
        setattr(prediction, name, None if body[name] is None else datetime.fromisoformat(body[name]))
    version = body["model_version"]
    prediction.model_version = (
        None if version is None else ModelVersion(pk=version[0], name=version[1], version=version[2])
    )
    return True


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()
