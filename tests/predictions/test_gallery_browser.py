"""The gallery, the photo's page and the themes in a real browser (Debian's Chromium driven
by Playwright) at a laptop's and a phone's width: tiles, filters kept in the URL, the view
toggle, multi-select delete, the explanation overlay (its slider, its class picker without
a reload, focus kept) with a real worker computing Grad-CAM, and light and dark themes."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from pytest_django.live_server_helper import LiveServer

from predictions.models import ModelVersion
from tests.conftest import PHOTOS, photo_bytes, wait_for_final
from tests.predictions import test_browser
from tests.predictions.test_browser import OVERFLOW, _log_in, _photo_prediction, _wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
chromium_browser = test_browser.chromium_browser  # the journey's fixture: one Chromium per test

WIDTHS = [pytest.param(1280, 900, id="1280px"), pytest.param(390, 844, id="390px")]


def _gallery_of_five(user: User) -> None:
    """Five real photos as the worker stores their results: four sure, one not sure
    (with a 0 % candidate it must not offer)."""
    _photo_prediction(user, "chelsea", "tabby cat", "n02123045",
                      [("tabby cat", "n02123045", 0.62), ("tiger cat", "n02123159", 0.21),
                       ("Egyptian Mau", "n02124075", 0.09)])  # fmt: skip
    _photo_prediction(user, "coffee", "espresso", "n07920052",
                      [("espresso", "n07920052", 0.91), ("cup", "n07930864", 0.05)])  # fmt: skip
    _photo_prediction(user, "motorcycle", "moped", "n03785016",
                      [("moped", "n03785016", 0.71), ("motor scooter", "n03791053", 0.2)])  # fmt: skip
    _photo_prediction(user, "cameraman", "tripod", "n04485082",
                      [("tripod", "n04485082", 0.55), ("reflex camera", "n04069434", 0.3)])  # fmt: skip
    rocket = _photo_prediction(user, "rocket", "missile", "n03773504",
                               [("missile", "n03773504", 0.34), ("projectile", "n04008634", 0.31),
                                ("space shuttle", "n04266014", 0.001)])  # fmt: skip
    rocket.uncertain = True
    rocket.save(update_fields=["uncertain"])


def _tiles_loaded(page: Page) -> None:
    _wait_until(
        page,
        "[...document.querySelectorAll('#gallery .card img')].every((i) => i.complete && i.naturalWidth > 0)",
    )


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_the_gallery_shows_tiles_keeps_filters_in_the_url_toggles_views_and_deletes_a_selection(
    chromium_browser: Browser, live_server: LiveServer, user: User, artifacts_dir: Path, width: int, height: int
) -> None:
    _gallery_of_five(user)
    page = chromium_browser.new_context(viewport={"width": width, "height": height}).new_page()
    _log_in(page, live_server.url, user.username)

    page.click("nav a:has-text('History')")
    page.wait_for_selector("#gallery")
    _tiles_loaded(page)
    tiles = page.locator("#gallery .card")
    assert tiles.count() == 5
    texts = tiles.all_inner_texts()
    # Each tile: the label (or "Not sure") and the confidence, as a person reads them.
    assert any("Espresso" in text and "91 %" in text for text in texts), texts
    unsure = page.locator("#gallery .card:has(.not-sure)")
    assert unsure.count() == 1
    assert "Not sure" in unsure.inner_text()
    assert "0 %" not in unsure.inner_text()  # the 0.1 % space shuttle is not offered as a "maybe"
    # Tiles side by side: two columns on a phone, more on a laptop.
    columns = page.evaluate(
        "new Set([...document.querySelectorAll('#gallery .card')].map((t) => t.getBoundingClientRect().top)).size"
    )
    assert columns <= (3 if width < 600 else 1), columns  # rows of tiles, not one tile per row
    # A white photo must not melt into a white tile: every thumbnail has a visible edge.
    border = page.locator("#gallery .card .photo").first.evaluate("i => getComputedStyle(i).borderBottomWidth")
    assert border == "1px"
    # Dates never wrap.
    assert page.locator("#gallery time").first.evaluate("t => getComputedStyle(t).whiteSpace") == "nowrap"
    page.screenshot(path=artifacts_dir / f"gallery-{width}.png", full_page=True)

    # A filter goes into the address; the list view keeps it, and back.
    page.fill("#id_label", "espresso")
    page.click(".filters button[type=submit]")
    page.wait_for_url(re.compile(r"/history/\?.*label=espresso"))
    assert page.locator("#gallery .card").count() == 1
    page.click(".view-toggle a:has-text('List')")
    page.wait_for_url(re.compile(r"label=espresso.*view=list|view=list.*label=espresso"))
    assert page.locator("#history-list tbody tr").count() == 1
    assert page.locator(".view-toggle a[aria-current=page]").inner_text() == "List"
    page.screenshot(path=artifacts_dir / f"gallery-{width}-list.png", full_page=True)
    # "Correct" on a row comes back to the same filtered list with focus on that row.
    row_id = page.locator("#history-list tbody tr").first.get_attribute("id")
    page.click("#history-list button:has-text('Correct')")
    page.wait_for_selector(".messages li:has-text('you confirmed')")
    assert "label=espresso" in page.url
    assert page.evaluate("document.activeElement.id") == row_id
    assert "You confirmed this" in page.locator(f"#{row_id}").inner_text()
    page.click(".view-toggle a:has-text('Grid')")
    page.wait_for_url(re.compile(r"label=espresso"))
    assert "view=list" not in page.url
    page.click("text=Clear filters")
    page.wait_for_selector("#gallery")
    assert page.locator("#gallery .card").count() == 5

    # Select two, delete them: the browser asks first, naming how many.
    delete = page.locator("#selection button[value=delete]")
    assert delete.is_disabled()  # nothing ticked yet
    page.check("input[aria-label='Select coffee-from-the-camera-roll.jpg']")
    page.check("input[aria-label='Select rocket-from-the-camera-roll.jpg']")
    assert page.locator("#selection-count").inner_text() == "2 selected"
    assert page.locator("#gallery .card.selected").count() == 2
    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    delete.click()
    page.wait_for_selector(".messages li:has-text('Deleted 2 predictions.')")
    # Focus back on the bar (its attribute: the form's .id is its "id" tick boxes).
    assert page.evaluate("document.activeElement.getAttribute('id')") == "selection"
    assert dialogs
    assert "these 2 predictions" in dialogs[0]
    assert page.locator("#gallery .card").count() == 3
    assert "coffee" not in page.locator("#gallery").inner_text()
    assert page.evaluate(OVERFLOW) <= 0


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_the_photos_page_lays_the_explanation_over_it_without_a_reload_and_keeps_focus(
    chromium_browser: Browser,
    live_server: LiveServer,
    celery_worker: subprocess.Popen[bytes],
    active_model: ModelVersion,
    user: User,
    artifacts_dir: Path,
    width: int,
    height: int,
) -> None:
    from predictions import services

    upload = SimpleUploadedFile("chelsea.png", photo_bytes("chelsea"), content_type="image/png")
    prediction = services.prediction_create(user=user, uploaded_file=upload, top_k=3)
    prediction = wait_for_final(prediction.id, timeout=120)
    assert prediction.status == "succeeded"
    context = chromium_browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(20_000)
    page = context.new_page()
    _log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/predictions/{prediction.id}/")
    page.wait_for_selector(".photo-stack img.photo-full")
    page.evaluate("window.__sameDocument = true")  # gone if anything reloads the page
    # The answer beside (or under) the photo: the top-k chart, clear review words, timings folded away.
    assert page.locator(".detail-result .bar-row").count() == 3
    assert page.locator(".review button:has-text('Correct')").count() == 1
    assert page.locator(".review summary").inner_text() == "Wrong: pick the right class"
    assert page.locator("details.facts-box").get_attribute("open") is None
    assert not page.locator("text=Total time").is_visible()
    assert page.locator("#overlay-strength").is_hidden()

    # Pick the top class from the keyboard: the overlay appears on the photo, focus stays.
    first = page.locator(".explain-classes button").nth(0)
    first.focus()
    page.keyboard.press("Enter")
    _wait_until(page, "Boolean(document.querySelector('.photo-stack img.explanation-overlay')?.naturalWidth)", 120_000)
    assert page.evaluate("window.__sameDocument") is True
    assert first.get_attribute("aria-pressed") == "true"
    assert page.evaluate("document.activeElement.value") == first.get_attribute("value")
    assert "explain=" in page.url  # a reload or a shared link shows the same overlay
    overlay = page.locator(".photo-stack img.explanation-overlay")
    first_src = overlay.get_attribute("src")

    # The slider sets the overlay's opacity.
    slider = page.locator("#overlay-opacity")
    assert slider.is_visible()
    slider.fill("20")
    assert overlay.evaluate("i => getComputedStyle(i).opacity") == "0.2"
    assert page.locator("#overlay-opacity-value").inner_text() == "20 %"
    slider.focus()
    page.keyboard.press("ArrowRight")  # a step of 5 from the keyboard
    assert overlay.evaluate("i => getComputedStyle(i).opacity") == "0.25"
    slider.fill("70")
    page.screenshot(path=artifacts_dir / f"detail-{width}.png", full_page=True)

    # Another class swaps the overlay in place; focus stays on the button pressed.
    second = page.locator(".explain-classes button").nth(1)
    second.focus()
    page.keyboard.press("Space")
    _wait_until(
        page,
        f"(() => {{ const i = document.querySelector('.photo-stack img.explanation-overlay');"
        f" return Boolean(i && i.naturalWidth && !i.src.endsWith({first_src!r})); }})()",
        120_000,
    )
    assert page.evaluate("window.__sameDocument") is True
    assert second.get_attribute("aria-pressed") == "true"
    assert first.get_attribute("aria-pressed") == "false"
    assert page.evaluate("document.activeElement.value") == second.get_attribute("value")
    second_label = second.locator(".label").inner_text().lower()
    assert (overlay.get_attribute("alt") or "").lower().endswith(second_label)
    assert page.locator(".explain-classes button .mark").nth(1).inner_text().strip() == "✓"

    # Timings are one click away.
    page.click("details.facts-box summary")
    assert page.locator("text=Total time").is_visible()
    assert page.evaluate(OVERFLOW) <= 0
    context.close()


def _luminance(colour: str) -> float:
    red, green, blue = (int(part) / 255 for part in re.findall(r"[\d.]+", colour)[:3])

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(red) + 0.7152 * linear(green) + 0.0722 * linear(blue)


def _contrast(foreground: str, background: str) -> float:
    lighter, darker = sorted((_luminance(foreground), _luminance(background)), reverse=True)
    return (lighter + 0.05) / (darker + 0.05)


# Text on its own background, as the eye sees it: (text element, element whose background it sits on).
READABLE = [
    ("main h1", "body"),
    (".tz-note", "body"),
    ("#gallery .card .label", "#gallery .card"),
    ("#gallery .card .confidence", "#gallery .card"),
    ("#gallery .card .card-meta", "#gallery .card"),
    ("#gallery .card .not-sure .verdict", "#gallery .card"),
    (".filters label", ".filters"),
    (".filters button[type=submit]", ".filters button[type=submit]"),
    (".view-toggle a[aria-current]", ".view-toggle a[aria-current]"),
    (".view-toggle a:not([aria-current])", ".view-toggle a:not([aria-current])"),
    (".topbar a", ".topbar"),
]


@pytest.mark.parametrize(("width", "height"), WIDTHS)
def test_light_and_dark_themes_follow_the_system_and_stay_readable(
    chromium_browser: Browser, live_server: LiveServer, user: User, artifacts_dir: Path, width: int, height: int
) -> None:
    _gallery_of_five(user)
    backgrounds = {}
    for scheme in ("light", "dark"):
        context = chromium_browser.new_context(viewport={"width": width, "height": height}, color_scheme=scheme)
        page = context.new_page()
        _log_in(page, live_server.url, user.username)
        page.goto(f"{live_server.url}/history/")
        _tiles_loaded(page)
        page.screenshot(path=artifacts_dir / f"theme-{scheme}-{width}-gallery.png", full_page=True)

        def colour(selector: str, prop: str, page: Page = page) -> str:
            return str(page.locator(selector).first.evaluate(f"e => getComputedStyle(e).{prop}"))

        backgrounds[scheme] = colour("body", "backgroundColor")
        poor = {
            text: round(ratio, 2)
            for text, ground in READABLE
            if (ratio := _contrast(colour(text, "color"), colour(ground, "backgroundColor"))) < 4.5
        }
        assert not poor, f"{scheme}: text below 4.5:1 contrast: {poor}"
        page.goto(f"{live_server.url}{page.locator('#gallery .card-title a').first.get_attribute('href')}")
        page.wait_for_selector(".photo-stack")
        page.screenshot(path=artifacts_dir / f"theme-{scheme}-{width}-detail.png", full_page=True)
        assert _contrast(colour(".detail-result h2", "color"), colour(".detail-result", "backgroundColor")) >= 4.5
        assert _contrast(colour(".bar-value", "color"), colour(".detail-result", "backgroundColor")) >= 4.5
        context.close()
    assert _luminance(backgrounds["light"]) > 0.8, backgrounds
    assert _luminance(backgrounds["dark"]) < 0.05, backgrounds


def test_the_upload_box_has_one_file_control_and_no_drop_hint_on_a_phone(
    chromium_browser: Browser, live_server: LiveServer, user: User
) -> None:
    for width, hint in ((1280, True), (390, False)):
        context = chromium_browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        _log_in(page, live_server.url, user.username)
        page.wait_for_selector(".dropzone.enhanced")  # the page's script has run
        # The browser's own "Choose Files / No file chosen" is out of sight; the button is the label.
        assert page.locator("input[type=file]").evaluate("i => i.getBoundingClientRect().width") <= 1
        assert page.locator(".dropzone-label .choose").is_visible()
        assert page.locator(".drop-hint").is_visible() is hint
        # Still a keyboard's control: Tab reaches it, and its ring shows on the button.
        page.locator("input[type=file]").focus()
        ring = page.locator(".dropzone-label .choose").evaluate("e => getComputedStyle(e).boxShadow")
        assert ring != "none"
        page.set_input_files("input[type=file]", str(PHOTOS["coffee"].path))
        assert page.locator("#previews img").count() == 1
        context.close()


def test_scrolling_down_the_gallery_adds_the_next_pages_tiles_and_the_link_stays_for_keyboards(
    chromium_browser: Browser, live_server: LiveServer, user: User
) -> None:
    from tests.factories import SucceededPredictionFactory

    for n in range(30):
        SucceededPredictionFactory.create(user=user, original_filename=f"holiday-{n:02d}.jpg")
    page = chromium_browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    _log_in(page, live_server.url, user.username)
    page.goto(f"{live_server.url}/history/")
    assert page.locator("#gallery .card").count() == 24
    assert page.locator(".pager a.older").get_attribute("href") == "?page=2"  # the link without JavaScript

    page.mouse.wheel(0, 20_000)
    _wait_until(page, "document.querySelectorAll('#gallery .card').length === 30")
    names = page.locator("#gallery .card .card-title a").all_inner_texts()
    assert len(set(names)) == 30  # each once, in order, newest first
    assert names[0].endswith("holiday-29.jpg")
    assert names[-1].endswith("holiday-00.jpg")
    assert page.locator(".pager a.older").count() == 0  # the last page: no "Older"
    assert "/history/" in page.url  # appended in place, no navigation
