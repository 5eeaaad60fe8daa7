"""Latency percentiles: ONE definition on every backend.

Linear interpolation between the two closest ranks, exactly PostgreSQL's
``percentile_cont``: for ``n`` sorted values ``v[0..n-1]`` and a fraction ``p``,
``pos = p * (n - 1)``, ``lo = floor(pos)``, ``result = v[lo] + (pos - lo) * (v[lo + 1] - v[lo])``.

- PostgreSQL: ``percentile_cont(p) WITHIN GROUP (ORDER BY col)`` inside the GROUP BY
  query (``PercentileCont``); only a handful of rows per group come back.
- Other backends (SQLite, local only): the column's values come back and Python's
  ``statistics.quantiles(values, n=100, method="inclusive")`` computes the same
  definition (``percentile_linear``).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from django.db.models import Aggregate, FloatField


class PercentileCont(Aggregate):
    """PostgreSQL ``percentile_cont(p) WITHIN GROUP (ORDER BY expr)``: linear interpolation."""

    function = "percentile_cont"
    name = "PercentileCont"
    template = "%(function)s(%(percentile)s) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()

    def __init__(self, expression: Any, *, percentile: float, **extra: Any) -> None:
        if not 0.0 <= percentile <= 1.0:
            raise ValueError("percentile must be between 0 and 1")
        # A float we validated, never user input: safe to inline in the SQL.
        super().__init__(expression, percentile=repr(float(percentile)), **extra)


def percentiles_linear(values: Iterable[float], percentiles: Sequence[float]) -> list[float | None]:
    """Each of ``percentiles`` (whole percents as fractions: 0.5, 0.95, 0.99) of ``values``
    (any order), as ``percentile_cont`` computes them; ``None`` for no values."""
    data = [float(value) for value in values]
    percents = [_whole_percent(percentile) for percentile in percentiles]
    if not data:
        return [None] * len(percents)
    if len(data) == 1:  # quantiles() wants two points; every percentile of one value is that value
        return [data[0]] * len(percents)
    cuts = statistics.quantiles(data, n=100, method="inclusive")  # cuts[k - 1] is the k-th percentile
    return [min(data) if k == 0 else max(data) if k == 100 else cuts[k - 1] for k in percents]


def percentile_linear(values: Iterable[float], percentile: float) -> float | None:
    """One percentile of ``values`` by the module's definition (``percentile_cont``)."""
    return percentiles_linear(values, [percentile])[0]


def percentile_key(percentile: float) -> str:
    """The result field of a percentile: 0.95 -> ``p95``."""
    return f"p{_whole_percent(percentile)}"


def _whole_percent(percentile: float) -> int:
    percent = round(percentile * 100)
    if not 0 <= percent <= 100 or not math.isclose(percent, percentile * 100, abs_tol=1e-9):
        raise ValueError(f"percentile must be a whole percent between 0 and 1, not {percentile!r}")
    return percent
