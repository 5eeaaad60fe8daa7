"""Forms of the API that still work but are on their way out (docs/api-compatibility.md).

An old form answers as it always did, plus three headers for its stated period:
``Deprecation`` (RFC 9745: since when), ``Sunset`` (RFC 8594: the date after which it
may stop working) and ``Link`` to what replaces it (``rel="successor-version"``). The
changelog (docs/changelog.md) names the same dates.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import date
from email.utils import formatdate

from django.urls import reverse
from rest_framework.request import Request

# Every deprecation is announced for at least this long before its Sunset.
MINIMUM_NOTICE_DAYS = 180


@dataclass(frozen=True)
class Deprecation:
    """One old form: when it was deprecated, when it may go, and the URL name of what
    replaces it (None: the same URL, in another form)."""

    since: date
    sunset: date
    successor: str | None = None

    def headers(self, request: Request) -> dict[str, str]:
        since = calendar.timegm(self.since.timetuple())
        sunset = calendar.timegm(self.sunset.timetuple())
        headers = {"Deprecation": f"@{since}", "Sunset": formatdate(sunset, usegmt=True)}
        if self.successor is not None:
            successor = request.build_absolute_uri(reverse(self.successor))
            headers["Link"] = f'<{successor}>; rel="successor-version"'
        return headers


# Several `image` parts on POST /api/v1/predictions/ (answered with a bare list): use
# POST /api/v1/predictions/batch/, which answers {"results": [...]} whatever the count.
MULTI_IMAGE_SUBMIT = Deprecation(since=date(2026, 12, 4), sunset=date(2027, 6, 30), successor="api:prediction-batch")

# A form-encoded (or multipart) body where the schema documents JSON: a correction's label
# and a model version's traffic_percent. Still read (DRF's browsable API sends forms);
# send the same fields as JSON.
FORM_BODY = Deprecation(since=date(2026, 12, 4), sunset=date(2027, 6, 30))


def form_body_headers(request: Request) -> dict[str, str]:
    """FORM_BODY's headers when ``request`` came with a form body, else none."""
    return {} if request.content_type.startswith("application/json") else FORM_BODY.headers(request)
