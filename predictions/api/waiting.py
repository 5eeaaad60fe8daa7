"""How long a submit or a poll may wait for a final status: ``?wait=N`` or ``Prefer: wait=N``.

Both are documented in the schema as what the server does: any number of seconds, held
to 0..``MAX_WAIT_SECONDS``; ``?wait`` that is not a number is a 400 (it is the client's
own parameter), while an unusable ``Prefer`` is ignored, as RFC 7240 asks of a server
that cannot honour a preference.
"""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter
from rest_framework.request import Request

from ..exceptions import ApplicationError

MAX_WAIT_SECONDS = 30

# A decimal number as JSON writes one: no "nan", "inf" or "1_0", which float() would take.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_PREFER_WAIT = re.compile(r"(?:^|[,;\s])wait=([^,;\s]+)", re.IGNORECASE)

WAIT_PARAMETERS = [
    OpenApiParameter(
        "wait",
        {"type": "number"},
        description=f"Wait up to N seconds for a final status before answering: a number, held to "
        f"0..{MAX_WAIT_SECONDS} (a larger one waits {MAX_WAIT_SECONDS} s, a negative one not at all). "
        "Not a number: 400.",
    ),
    OpenApiParameter(
        "Prefer",
        str,
        location=OpenApiParameter.HEADER,
        description="`wait=N` (RFC 7240) does what `?wait=N` does; `?wait` wins when both are given. "
        "Other preferences, and a `wait` that is not a number, are ignored.",
    ),
]


def wait_seconds(request: Request) -> float:
    """Seconds to wait, from ``?wait=N`` or ``Prefer: wait=N``; 0 when neither is given."""
    return wait_from(request.query_params.get("wait"), request.headers.get("Prefer", ""))


def wait_from(raw: str | None, prefer: str) -> float:
    """``wait_seconds`` from the raw ``?wait`` (``None``: not given) and ``Prefer`` header."""
    if raw is not None:
        if not _NUMBER.fullmatch(raw.strip()):
            raise ApplicationError("wait must be a number of seconds.", field="wait")
    else:
        match = _PREFER_WAIT.search(prefer)
        raw = match.group(1) if match and _NUMBER.fullmatch(match.group(1)) else "0"
    return min(max(float(raw), 0.0), MAX_WAIT_SECONDS)
