"""Request body parsers of the API: DRF's, with every way a body can fail to parse
answered as a 400 in the one error shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, which turns a ``ValueError`` into a 400 but lets the decoder's
    ``RecursionError`` through: ``[[[[...]]]]`` a thousand deep (2 KB) was a 500. Such a
    body is refused as unreadable, like any other malformed JSON."""

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply") from None
