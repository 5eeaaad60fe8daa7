"""What decoding an image will cost, read from its header before any pixel is decoded,
and opening it within a budget: the guard shared by the upload check (web) and the
worker's decode (``open_rgb``), so that no single image costs seconds and gigabytes.

Pillow opens lazily: ``Image.open`` reads the header (size, mode, the codec's raw mode)
and nothing else. The cost is the size of the raw pixel data the decoder produces,
``width x height x bands x bits per band / 8`` bytes: the zlib stream of a PNG inflates to
that many bytes (plus one filter byte a row), a JPEG's IDCT writes that many, and the
decode time follows it. A 16-bit PNG is decoded to 8 bits by Pillow (mode ``RGBA`` for a
16-bit RGBA PNG, raw mode ``RGBA;16B``) but still inflates 16 bits a sample, so its bits
are read from the raw mode, not from the mode.

Over the budget a JPEG is decoded reduced (``Image.draft``: the IDCT scaled by 1/2, 1/4
or 1/8, which decodes only that many pixels); any other format cannot be decoded
partially (``Image.reduce`` works on pixels already decoded), so it is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image

DRAFT_FORMATS = ("JPEG", "MPO")
DRAFT_SCALES = (2, 4, 8)  # what libjpeg's scaled IDCT offers
_MODE_BITS = {"1": 1, "I": 32, "F": 32, "I;16": 16, "I;16B": 16, "I;16L": 16, "I;16N": 16}


class ImageTooCostlyError(ValueError):
    """Decoding the image would cost more than the budget, even reduced."""

    def __init__(self, cost: DecodeCost, budget: int) -> None:
        super().__init__(cost.refusal(budget))
        self.cost = cost
        self.budget = budget


@dataclass(frozen=True)
class DecodeCost:
    """The decode of one image as its header declares it."""

    width: int
    height: int
    bands: int
    bits: int  # per band, as stored (16 for a 16-bit PNG even though Pillow hands out 8)
    image_format: str
    scale: int = 1  # 2, 4 or 8: a JPEG decoded reduced (``Image.draft``)

    @property
    def full_bytes(self) -> int:
        """Bytes of raw pixel data a full decode produces."""
        return self.width * self.height * self.bands * self.bits // 8

    @property
    def bytes(self) -> int:
        """Bytes of raw pixel data the decode produces at ``scale``."""
        width, height = -(-self.width // self.scale), -(-self.height // self.scale)
        return width * height * self.bands * self.bits // 8

    def within(self, budget: int) -> DecodeCost | None:
        """This decode, reduced if need be (JPEG only) so that it fits ``budget``; ``None``
        when it cannot fit."""
        if self.full_bytes <= budget:
            return self
        if self.image_format in DRAFT_FORMATS:
            for scale in DRAFT_SCALES:
                reduced = DecodeCost(self.width, self.height, self.bands, self.bits, self.image_format, scale)
                if reduced.bytes <= budget:
                    return reduced
        return None

    def refusal(self, budget: int) -> str:
        """Why the image is refused, in words its owner can act on."""
        depth = f"{self.bands} channel{'s' if self.bands != 1 else ''} of {self.bits} bits"
        largest_8bit_rgb = int((budget / 3) ** 0.5)
        return (
            f"This image would take {_mb(self.full_bytes)} of memory to decode ({self.width} x {self.height} pixels, "
            f"{depth}); the limit is {_mb(budget)}. Save it smaller, with 8 bits per channel, or as JPEG "
            f"(an 8-bit RGB image up to about {largest_8bit_rgb} x {largest_8bit_rgb} pixels fits)."
        )


def _mb(size_bytes: int) -> str:
    return f"{size_bytes / 1_048_576:.0f} MB"


def decode_cost(image: Image.Image) -> DecodeCost:
    """The cost of decoding a lazily opened ``image`` (nothing is decoded here)."""
    width, height = image.size
    bands = len(image.getbands())
    bits = _MODE_BITS.get(image.mode, 8)
    for tile in getattr(image, "tile", None) or []:
        args = tile[3]  # the codec's arguments: its raw mode first ("RGBA;16B")
        rawmode = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else "")
        if isinstance(rawmode, str) and ";16" in rawmode:
            bits = max(bits, 16)
    return DecodeCost(width=width, height=height, bands=bands, bits=bits, image_format=image.format or "")


def open_within(image: Image.Image, max_decode_bytes: int | None) -> Image.Image:
    """``image`` (opened, not yet decoded) set up to decode within ``max_decode_bytes``:
    unchanged when it fits, a JPEG drafted to the scale that fits, anything else refused
    with ``ImageTooCostlyError`` before a pixel is decoded. ``None``: no budget."""
    if max_decode_bytes is None:
        return image
    cost = decode_cost(image)
    fitting = cost.within(max_decode_bytes)
    if fitting is None:
        raise ImageTooCostlyError(cost, max_decode_bytes)
    if fitting.scale > 1:
        mode = "RGB" if image.mode not in ("L", "CMYK") else image.mode
        image.draft(mode, (-(-cost.width // fitting.scale), -(-cost.height // fitting.scale)))
    return image
