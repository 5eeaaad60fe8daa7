"""A person in a real browser (Debian's Chromium driven by Playwright) against a live
server and a real worker: log in, upload photos, watch results arrive, open history."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from pytest_django.live_server_helper import LiveServer

from predictions.models import ModelVersion
from tests.conftest import PHOTOS

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page, Route

    from predictions.models import Prediction

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip


@pytest.fixture
def page(artifacts_dir: Path) -> Iterator[Page]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed: `apt-get install chromium` (see README)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def test_log_in_upload_three_photos_see_results_and_history(
    page: Page,
    live_server: LiveServer,
    celery_worker: subprocess.Popen[bytes],
    active_model: ModelVersion,
    user: User,
    artifacts_dir: Path,
) -> None:
    page.goto(f"{live_server.url}/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("button[type=submit]")
    page.wait_for_selector("#dropzone")
    page.screenshot(path=artifacts_dir / "1-upload.png", full_page=True)

    page.set_input_files("input[type=file]", [str(PHOTOS[name].path) for name in ("chelsea", "coffee", "rocket")])
    assert page.locator("#previews img").count() == 3
    page.click("#submit")

    page.wait_for_selector(".card", timeout=10_000)
    _wait_until(page, "document.querySelectorAll('.card[data-status=succeeded]').length === 3", timeout=90_000)
    page.screenshot(path=artifacts_dir / "2-results.png", full_page=True)
    # As shown: the stylesheet capitalises each label's first letter ("Tabby cat").
    # Each card has a verdict: a bold label, or "Not sure" with the candidates (the rocket
    # photo may be either); the cat and the espresso are sure.
    assert page.locator(".card .top-label").count() == 3
    labels = page.locator(".card .top-label .label").all_inner_texts()
    assert len(labels) >= 2, labels
    assert all(label[:1].isupper() for label in labels), labels
    # Compact tiles: the chart and the timings are on each photo's page.
    assert page.locator(".card .bar-row").count() == 0
    assert all("%" in text for text in page.locator(".card .top-label").all_inner_texts())
    assert any(label.lower() in {"tabby cat", "tiger cat", "egyptian mau"} for label in labels), labels
    assert "Espresso" in labels
    assert page.evaluate("document.getElementById('announcer').textContent").startswith("Result ready.")

    page.click("text=History")
    page.wait_for_selector("#gallery")
    page.screenshot(path=artifacts_dir / "3-history.png", full_page=True)
    assert page.locator("#gallery .card").count() == 3


def test_bad_file_in_the_browser_shows_a_readable_error(
    page: Page, live_server: LiveServer, user: User, tmp_path: Path, artifacts_dir: Path
) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("button[type=submit]")

    page.set_input_files("input[type=file]", str(bad))
    page.click("#submit")

    error = page.locator("#upload-errors")
    error.wait_for()
    page.screenshot(path=artifacts_dir / "4-upload-error.png", full_page=True)
    assert "notes.jpg" in error.inner_text()
    assert "not an image" in error.inner_text()


# --- Layout at a laptop's and a phone's width --------------------------------------------

WIDTHS = (1280, 390)
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"


def _wait_until(page: Page, expression: str, timeout: float = 30_000) -> None:
    """``page.wait_for_function`` without its eval inside the page, which the site's
    Content-Security-Policy refuses (no 'unsafe-eval'): ``page.evaluate`` comes from the
    driver, not the page, and polls ``expression`` until it is true."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout / 1000:.0f} s: {expression}")
        page.wait_for_timeout(100)


def _photo_prediction(
    user: User, name: str, label: str, class_id: str, scores: list[tuple[str, str, float]]
) -> Prediction:
    """A succeeded prediction of a real scikit-image photo, as the worker stores one."""
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from predictions.models import ModelVersion, PredictionStatus
    from tests.conftest import photo_bytes
    from tests.factories import PredictionFactory

    content = photo_bytes(name)
    version, _ = ModelVersion.objects.get_or_create(name="efficientnet_lite0", version="1", defaults={"path": "models"})
    return PredictionFactory.create(
        user=user, status=PredictionStatus.SUCCEEDED, original_filename=f"{name}-from-the-camera-roll.jpg",
        image=ContentFile(content, name=f"{name}.jpg"), size_bytes=len(content), width=451, height=300,
        label=label, class_id=class_id, confidence=scores[0][2],
        top_predictions=[{"label": lab, "class_id": cid, "score": s} for lab, cid, s in scores],
        completed_at=timezone.now(), model_version=version,
        queue_ms=12.0, preprocess_ms=4.2, inference_ms=38.5, total_ms=61.0,
    )  # fmt: skip


@pytest.fixture
def chromium_browser(artifacts_dir: Path) -> Iterator[Browser]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


def _log_in(page: Page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("main button[type=submit]")
    page.wait_for_selector("#dropzone")


def test_every_page_fits_a_laptop_and_a_phone_without_sideways_scrolling(
    chromium_browser: Browser, live_server: LiveServer, artifacts_dir: Path
) -> None:
    from tests.factories import OperatorFactory

    # An operator (reads every prediction): the widest pages (admin log, stats tables).
    person = OperatorFactory.create(username="maria.rodriguez")
    cat = _photo_prediction(person, "chelsea", "tabby cat", "n02123045",
                            [("tabby cat", "n02123045", 0.62), ("tiger cat", "n02123159", 0.21),
                             ("Egyptian Mau", "n02124075", 0.09), ("Golden Retriever", "n02099601", 0.02),
                             ("lynx", "n02127052", 0.01)])  # fmt: skip
    coffee = _photo_prediction(person, "coffee", "espresso", "n07920052",
                               [("espresso", "n07920052", 0.91), ("cup", "n07930864", 0.05),
                                ("coffee mug", "n03063599", 0.02)])  # fmt: skip
    pages = {
        "upload": "/",
        "results": f"/results/?id={cat.id}&id={coffee.id}",
        "detail": f"/predictions/{cat.id}/?back=label%3Dcat",
        "history-filtered": "/history/?label=cat",
        "history-empty-filter": "/history/?label=zebra&created_after=2026-01-02&created_before=2026-01-01",
        "stats": "/stats/",
        "profile": "/accounts/profile/",
        "password": "/accounts/password/",
        "admin-log": "/admin/predictions/prediction/",
        "admin-prediction": f"/admin/predictions/prediction/{cat.id}/change/",
        "not-found": "/no-such-page/",
    }
    overflowing = {}
    for width in WIDTHS:
        context = chromium_browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        for name in ("signup", "login"):  # signed out
            page.goto(f"{live_server.url}/accounts/{name}/")
            page.screenshot(path=artifacts_dir / f"layout-{width}-{name}.png", full_page=True)
            if (extra := page.evaluate(OVERFLOW)) > 0:
                overflowing[f"{width}px {name}"] = extra
        _log_in(page, live_server.url, person.username)
        for name, path in pages.items():
            page.goto(f"{live_server.url}{path}")
            page.wait_for_load_state("load")
            if name == "upload":
                page.set_input_files("input[type=file]", [str(PHOTOS[n].path) for n in ("chelsea", "coffee", "rocket")])
                page.wait_for_selector("#previews img")
            if name == "stats":
                page.click("text=For operators")  # the widest tables
            page.screenshot(path=artifacts_dir / f"layout-{width}-{name}.png", full_page=True)
            extra = page.evaluate(OVERFLOW)
            if extra > 0:
                overflowing[f"{width}px {name}"] = extra
        # What a person must be able to find on each width.
        page.goto(f"{live_server.url}{pages['history-filtered']}")
        assert page.locator(".result-count").inner_text().startswith("1 prediction ")
        assert page.locator("#gallery .card").count() == 1
        page.locator("#gallery .card .card-title a").first.click()
        page.wait_for_selector(".detail-photo img")
        assert page.locator(".bar-row").count() == 5
        assert page.locator(".bar-row .bar-label").nth(3).inner_text() == "Golden retriever"
        page.click("text=Back to history")
        assert page.url.endswith("/history/?label=cat")
        context.close()
    assert not overflowing, f"pages wider than the window (extra px): {overflowing}"


def test_upload_checks_files_first_shows_progress_and_keeps_refused_ones(
    chromium_browser: Browser, live_server: LiveServer, user: User, tmp_path: Path, artifacts_dir: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a photo either")
    context = chromium_browser.new_context(viewport={"width": 390, "height": 900})
    page = context.new_page()
    _log_in(page, live_server.url, user.username)
    assert "up to 20 images at a time" in page.locator("#upload-limits").inner_text()

    posts = []

    def slow_upload(route: Route) -> None:
        posts.append(route.request.post_data_buffer)
        time.sleep(0.6)  # long enough to see the button disabled and the bars
        route.continue_()

    page.route(
        lambda url: url == f"{live_server.url}/",
        lambda route: slow_upload(route) if route.request.method == "POST" else route.continue_(),
    )
    page.set_input_files("input[type=file]", [str(notes), str(fake), str(PHOTOS["coffee"].path)])

    # Checked before anything is sent: the text file is refused on the spot.
    # Once, in the list above the previews, as a sentence (the preview only says "Refused").
    assert "notes.txt: Not a supported image type" in page.locator("#upload-errors").inner_text()
    assert page.locator("#previews .preview.invalid .preview-note").inner_text() == "Refused (see above)"
    assert page.locator("#submit").inner_text() == "Classify 2 images"
    page.click("#submit")
    assert page.locator("#submit").is_disabled()
    page.screenshot(path=artifacts_dir / "upload-390-sending.png", full_page=True)

    page.wait_for_selector("#upload-cards .card", timeout=15_000)
    _wait_until(page, "!document.getElementById('submit').textContent.includes('Sending')")
    assert len(posts) == 2  # the text file never left the browser
    errors = page.locator("#upload-errors").inner_text()
    assert "holiday.jpg" in errors
    assert "not an image" in errors
    # Refused files stay selected, so they can be removed or fixed; the good one became a card.
    assert page.locator("#previews .preview.invalid").count() == 2
    assert (
        "Sent" in page.locator("#upload-status").inner_text() or "sent" in page.locator("#upload-status").inner_text()
    )
    card = page.locator("#upload-cards .card").first
    assert card.get_attribute("data-status") in {"pending", "running"}
    assert (card.locator("a").first.get_attribute("href") or "").startswith("/predictions/")
    page.screenshot(path=artifacts_dir / "upload-390-done.png", full_page=True)
    assert page.evaluate(OVERFLOW) <= 0
    context.close()


def test_times_are_in_the_browsers_time_zone(chromium_browser: Browser, live_server: LiveServer, user: User) -> None:
    from datetime import UTC, datetime

    _photo_prediction(user, "coffee", "espresso", "n07920052", [("espresso", "n07920052", 0.9)])
    from predictions.models import Prediction

    Prediction.objects.update(created_at=datetime(2026, 11, 27, 23, 30, tzinfo=UTC))
    context = chromium_browser.new_context(viewport={"width": 390, "height": 900}, timezone_id="Asia/Tokyo")
    page = context.new_page()
    _log_in(page, live_server.url, user.username)

    page.goto(f"{live_server.url}/history/")
    assert "Times are in Asia/Tokyo" in page.locator(".tz-note").inner_text()
    assert page.locator("#gallery .card-meta time").inner_text() == "2026-11-28 08:30"
    page.goto(f"{live_server.url}/history/?view=list")
    assert page.locator("td[data-label=Uploaded] time").inner_text() == "2026-11-28 08:30"
    context.close()


# --- The whole journey of a new person, at a laptop's and a phone's width -----------------

JOURNEY_PHOTOS = ("chelsea", "coffee", "rocket", "motorcycle")
JOURNEY_PASSWORD = "pale-orange-kettle-42"
OVERLAY_SHOWN = """() => { const image = document.querySelector("img.explanation-overlay");
                          return Boolean(image && image.complete && image.naturalWidth > 0); }"""
THUMBNAILS_SHOWN = """() => { const images = [...document.querySelectorAll("#result_list tbody img")];
                             return images.length > 0 && images.every((i) => i.complete && i.naturalWidth > 0); }"""


class _Journey:
    """Each page the person sees: a full-page screenshot and the width it takes."""

    def __init__(self, page: Page, artifacts_dir: Path, width: int) -> None:
        self.page, self.artifacts_dir, self.width = page, artifacts_dir, width
        self.steps: list[str] = []
        self.overflowing: dict[str, int] = {}

    def saw(self, step: str) -> None:
        self.page.wait_for_load_state("load")
        self.steps.append(step)
        name = f"journey-{self.width}-{len(self.steps):02d}-{step}.png"
        self.page.screenshot(path=self.artifacts_dir / name, full_page=True)
        if (extra := self.page.evaluate(OVERFLOW)) > 0:
            self.overflowing[step] = extra


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)], ids=["1280px", "390px"])
def test_a_new_person_signs_up_classifies_explains_reviews_history_and_stats_then_staff_reads_the_log(
    chromium_browser: Browser,
    live_server: LiveServer,
    celery_worker: subprocess.Popen[bytes],
    active_model: ModelVersion,
    artifacts_dir: Path,
    width: int,
    height: int,
) -> None:
    from tests.factories import OperatorFactory

    operator = OperatorFactory.create(username=f"ops.{width}")
    context = chromium_browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(15_000)  # a busy 2-core machine: pages, not the worker
    page = context.new_page()
    journey = _Journey(page, artifacts_dir, width)

    # Sign up through the form and land on the upload page, logged in.
    page.goto(f"{live_server.url}/")
    journey.saw("login-redirect")
    page.click("main a:has-text('Sign up')")
    page.fill("#id_username", f"ana.{width}")
    page.fill("#id_password1", JOURNEY_PASSWORD)
    page.fill("#id_password2", JOURNEY_PASSWORD)
    journey.saw("signup")
    page.click("main button[type=submit]")
    page.wait_for_selector("#dropzone")
    assert f"(ana.{width})" in page.locator(".nav-user").inner_text()
    journey.saw("upload")

    # Several real photos; each becomes a card with a chart and a verdict (sure or not).
    page.set_input_files("input[type=file]", [str(PHOTOS[name].path) for name in JOURNEY_PHOTOS])
    _wait_until(page, f"document.querySelectorAll('#previews img').length === {len(JOURNEY_PHOTOS)}")
    assert page.locator("#submit").inner_text() == f"Classify {len(JOURNEY_PHOTOS)} images"
    journey.saw("chosen")
    page.click("#submit")
    _wait_until(
        page,
        f"document.querySelectorAll('#upload-cards .card[data-status=succeeded]').length === {len(JOURNEY_PHOTOS)}",
        timeout=120_000,
    )
    journey.saw("results")
    filenames = [PHOTOS[name].path.name for name in JOURNEY_PHOTOS]
    cards = {
        filename: page.locator(f"#upload-cards .card:has(.card-title a[title$='{filename}'])") for filename in filenames
    }
    for filename, card in cards.items():
        assert card.locator(".bar-row").count() == 0, filename  # the chart is on the photo's page
        verdict = " ".join(card.locator(".top-label").inner_text().split())
        if card.locator(".top-label.not-sure").count():  # the model's own entropy / margin thresholds
            assert verdict.startswith("Not sure"), (filename, verdict)
            assert verdict.count("%") <= 2, (filename, verdict)
            assert not re.search(r"(?<![\d.])0 %", verdict), (filename, verdict)  # never a 0 % "maybe"
        else:
            assert card.locator(".top-label .label").inner_text(), (filename, verdict)
            assert verdict.endswith("%"), (filename, verdict)
        assert card.locator(".card-photo img").evaluate("image => image.naturalWidth") > 0, filename
    assert cards["chelsea.png"].locator(".top-label .label").inner_text().lower() in {
        "tabby cat", "tiger cat", "egyptian mau"}  # fmt: skip
    assert cards["coffee.png"].locator(".top-label .label").inner_text() == "Espresso"

    # The cat's page: the chart and the timings; where the model looked for its top class
    # is laid over the photo (without a reload: the page's script fetches it).
    cards["chelsea.png"].locator(".card-title a").click()
    page.wait_for_selector(".detail-photo img")
    assert page.locator(".detail-result .bar-row").count() == 5
    page.click("details.facts-box summary")
    assert "ms" in page.locator("details.facts-box").inner_text()
    journey.saw("detail")
    top_class = page.locator(".explain-classes button").first
    top_label = top_class.locator(".label").inner_text()
    top_class.click()
    _wait_until(page, OVERLAY_SHOWN, timeout=120_000)  # Grad-CAM on the worker's inference queue
    pressed = page.locator(".explain-classes button").first
    assert pressed.get_attribute("aria-pressed") == "true"
    assert pressed.inner_text().endswith("✓")
    assert (page.locator("img.explanation-overlay").get_attribute("alt") or "").endswith(top_label.lower())
    page.locator("#explain").scroll_into_view_if_needed()
    journey.saw("explanation")

    # History, a gallery: everything, then filtered by a label, then all again.
    page.click("nav a:has-text('History')")
    page.wait_for_selector("#gallery")
    assert page.locator("#gallery .card").count() == len(JOURNEY_PHOTOS)
    journey.saw("history")
    page.fill("#id_label", "espresso")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**/history/?*label=espresso*")
    assert page.locator(".result-count").inner_text().startswith("1 prediction matches your filters")
    assert page.locator("#gallery .card").count() == 1
    assert "coffee.png" in page.locator("#gallery").inner_text()
    journey.saw("history-filtered")
    page.click(".view-toggle a:has-text('List')")  # the list view keeps the filter
    page.wait_for_url("**/history/?*view=list*")
    assert "coffee.png" in page.locator("#history-list tbody").inner_text()
    assert page.locator("#history-list tbody tr").count() == 1
    journey.saw("history-list")
    page.click("text=Clear filters")
    page.wait_for_url("**/history/?view=list")
    page.click(".view-toggle a:has-text('Grid')")
    page.wait_for_selector("#gallery")
    assert page.locator("#gallery .card").count() == len(JOURNEY_PHOTOS)

    # Tick the motorbike and delete it: the browser asks first.
    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.check("input[aria-label='Select motorcycle_left.png']")
    page.once("dialog", accept)
    page.click("#selection button[value=delete]")
    page.wait_for_selector(".messages li:has-text('Deleted 1 prediction.')")
    assert dialogs
    assert "Delete this prediction" in dialogs[0]
    assert page.locator("#gallery .card").count() == len(JOURNEY_PHOTOS) - 1
    assert "motorcycle_left.png" not in page.locator("#gallery").inner_text()
    journey.saw("history-deleted")

    # Stats: the person's own figures (the deleted one is gone).
    page.click("nav a:has-text('Stats')")
    page.wait_for_selector(".stat-tiles")
    assert "Your predictions" in page.locator(".window-choice").inner_text()
    assert page.locator(".stat-tiles .tile").first.inner_text().split() == [
        str(len(JOURNEY_PHOTOS) - 1), "images", "classified"]  # fmt: skip
    assert "Espresso" in page.locator("[aria-labelledby=what-heading]").inner_text()
    journey.saw("stats")

    # Log out; a staff account with predictions.view_prediction logs in with the real form.
    page.click(".nav-user button:has-text('Log out')")
    page.wait_for_selector("#id_username")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", "correct-horse-battery")
    journey.saw("staff-login")
    page.click("main button[type=submit]")
    page.wait_for_selector("#dropzone")
    page.click("nav a:has-text('Admin site')")
    page.wait_for_selector("#content")
    journey.saw("admin")
    page.click("#content a[href$='/admin/predictions/prediction/']")
    page.wait_for_selector("#result_list")
    _wait_until(page, THUMBNAILS_SHOWN)
    log = page.locator("#result_list tbody").inner_text()
    assert page.locator("#result_list tbody tr").count() == len(JOURNEY_PHOTOS) - 1
    assert all(name in log for name in ("chelsea.png", "coffee.png", "rocket.jpg")), log
    assert f"ana.{width}" in log
    journey.saw("admin-log")

    context.close()
    assert not journey.overflowing, f"pages wider than the {width}px window (extra px): {journey.overflowing}"
