"""The real photos the ImageNet models are checked on, with the WordNet ids counted as correct.

They ship inside scikit-image (``skimage/data``), so builds and tests need no network.
Expected ids were chosen by looking at the photos; several are accepted where ImageNet has
near-synonyms (tabby / tiger cat / Egyptian cat; missile / projectile / space shuttle ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TestPhoto:
    """One shipped photo and the ImageNet classes that count as a correct answer."""

    __test__ = False  # not a pytest test class

    name: str
    filename: str
    expected: tuple[str, ...]
    description: str

    @property
    def path(self) -> Path:
        """Absolute path of the photo inside the installed scikit-image."""
        return skimage_data_dir() / self.filename


def photos_available() -> bool:
    """Whether scikit-image (which ships the photos) is installed."""
    try:
        import skimage  # noqa: F401
    except ImportError:
        return False
    return True


def skimage_data_dir() -> Path:
    """Directory holding scikit-image's bundled sample images."""
    import skimage

    return Path(skimage.__file__).parent / "data"


TEST_PHOTOS: tuple[TestPhoto, ...] = (
    TestPhoto(
        "chelsea",
        "chelsea.png",
        ("n02123045", "n02123159", "n02124075"),
        "Chelsea the cat (tabby / tiger cat / Egyptian cat)",
    ),
    TestPhoto(
        "coffee",
        "coffee.png",
        ("n07920052", "n07930864", "n03063599"),
        "a cup of espresso on a saucer (espresso / cup / coffee mug)",
    ),
    TestPhoto(
        "rocket",
        "rocket.jpg",
        ("n03773504", "n04008634", "n04266014"),
        "a rocket on its launch pad (missile / projectile / space shuttle)",
    ),
    TestPhoto(
        "motorcycle",
        "motorcycle_left.png",
        ("n03785016", "n03791053"),
        "a motorbike in a lab (moped / motor scooter)",
    ),
    TestPhoto("cameraman", "camera.png", ("n04485082",), "the 'cameraman' photo, camera on a tripod (tripod)"),
)
