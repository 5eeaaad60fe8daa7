"""A person in a real browser (Debian's Chromium driven by Playwright) against a live
server and a real worker: log in, upload photos, watch results arrive, open history."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.conftest import PHOTOS

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip


@pytest.fixture
def page(artifacts_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not shutil.os.path.exists(CHROMIUM):
        pytest.fail("Chromium is not installed: `apt-get install chromium` (see README)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        yield context.new_page()
        context.close()
        browser.close()


def test_log_in_upload_three_photos_see_results_and_history(page, live_server, celery_worker, user, artifacts_dir):
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
    page.wait_for_function("document.querySelectorAll('.card[data-status=succeeded]').length === 3", timeout=90_000)
    page.screenshot(path=artifacts_dir / "2-results.png", full_page=True)
    # As shown: the stylesheet capitalises each label's first letter ("Tabby cat").
    # Each card has a verdict: a bold label, or "Not sure" with the candidates (the rocket
    # photo may be either); the cat and the espresso are sure.
    assert page.locator(".card .top-label").count() == 3
    labels = page.locator(".card .top-label .label").all_inner_texts()
    assert len(labels) >= 2 and all(label[:1].isupper() for label in labels), labels
    assert page.locator(".card").first.locator(".bar-row").count() == 5
    assert "ms" in page.locator(".card .latency").first.inner_text()
    assert any(label.lower() in {"tabby cat", "tiger cat", "egyptian mau"} for label in labels), labels
    assert "Espresso" in labels
    assert page.evaluate("document.getElementById('announcer').textContent").startswith("Result ready.")

    page.click("text=History")
    page.wait_for_selector("table.history")
    page.screenshot(path=artifacts_dir / "3-history.png", full_page=True)
    assert page.locator("table.history tbody tr").count() == 3


def test_bad_file_in_the_browser_shows_a_readable_error(page, live_server, user, tmp_path, artifacts_dir):
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
    assert "notes.jpg" in error.inner_text() and "not an image" in error.inner_text()


# --- Layout at a laptop's and a phone's width --------------------------------------------

WIDTHS = (1280, 390)
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"


def _photo_prediction(user, name: str, label: str, class_id: str, scores: list[tuple[str, str, float]]):
    """A succeeded prediction of a real scikit-image photo, as the worker stores one."""
    from django.core.files.base import ContentFile
    from django.utils import timezone

    from predictions.models import ModelVersion, PredictionStatus
    from tests.conftest import photo_bytes
    from tests.factories import PredictionFactory

    content = photo_bytes(name)
    version, _ = ModelVersion.objects.get_or_create(name="efficientnet_lite0", version="1", defaults={"path": "models"})
    return PredictionFactory(
        user=user, status=PredictionStatus.SUCCEEDED, original_filename=f"{name}-from-the-camera-roll.jpg",
        image=ContentFile(content, name=f"{name}.jpg"), size_bytes=len(content), width=451, height=300,
        label=label, class_id=class_id, confidence=scores[0][2],
        top_predictions=[{"label": lab, "class_id": cid, "score": s} for lab, cid, s in scores],
        completed_at=timezone.now(), model_version=version,
        queue_ms=12.0, preprocess_ms=4.2, inference_ms=38.5, total_ms=61.0,
    )  # fmt: skip


@pytest.fixture
def chromium_browser(artifacts_dir):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


def _log_in(page, base_url: str, username: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("main button[type=submit]")
    page.wait_for_selector("#dropzone")


def test_every_page_fits_a_laptop_and_a_phone_without_sideways_scrolling(chromium_browser, live_server, artifacts_dir):
    from tests.factories import OperatorFactory

    # An operator (reads every prediction): the widest pages (admin log, stats tables).
    person = OperatorFactory(username="maria.rodriguez")
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
        assert page.locator("table.history tbody tr").count() == 1
        page.locator("table.history tbody tr a").first.click()
        page.wait_for_selector(".detail-photo img")
        assert page.locator(".bar-row").count() == 5
        assert page.locator(".bar-row .bar-label").nth(3).inner_text() == "Golden retriever"
        page.click("text=Back to history")
        assert page.url.endswith("/history/?label=cat")
        context.close()
    assert not overflowing, f"pages wider than the window (extra px): {overflowing}"


def test_upload_checks_files_first_shows_progress_and_keeps_refused_ones(chromium_browser, live_server, user, tmp_path,
                                                                        artifacts_dir):  # fmt: skip
    notes = tmp_path / "notes.txt"
    notes.write_text("not a photo")
    fake = tmp_path / "holiday.jpg"
    fake.write_text("this is not a photo either")
    context = chromium_browser.new_context(viewport={"width": 390, "height": 900})
    page = context.new_page()
    _log_in(page, live_server.url, user.username)
    assert "up to 20 images at a time" in page.locator("#upload-limits").inner_text()

    posts = []

    def slow_upload(route):
        posts.append(route.request.post_data_buffer)
        time.sleep(0.6)  # long enough to see the button disabled and the bars
        route.continue_()

    page.route(
        lambda url: url == f"{live_server.url}/",
        lambda route: slow_upload(route) if route.request.method == "POST" else route.continue_(),
    )
    page.set_input_files("input[type=file]", [str(notes), str(fake), str(PHOTOS["coffee"].path)])

    # Checked before anything is sent: the text file is refused on the spot.
    assert "notes.txt: not a supported image type" in page.locator("#upload-errors").inner_text()
    assert page.locator("#submit").inner_text() == "Classify 2 images"
    page.click("#submit")
    assert page.locator("#submit").is_disabled()
    page.screenshot(path=artifacts_dir / "upload-390-sending.png", full_page=True)

    page.wait_for_selector("#upload-cards .card", timeout=15_000)
    page.wait_for_function("!document.getElementById('submit').textContent.includes('Sending')")
    assert len(posts) == 2  # the text file never left the browser
    errors = page.locator("#upload-errors").inner_text()
    assert "holiday.jpg" in errors and "not an image" in errors
    # Refused files stay selected, so they can be removed or fixed; the good one became a card.
    assert page.locator("#previews .preview.invalid").count() == 2
    assert (
        "Sent" in page.locator("#upload-status").inner_text() or "sent" in page.locator("#upload-status").inner_text()
    )
    card = page.locator("#upload-cards .card").first
    assert card.get_attribute("data-status") in {"pending", "running"}
    assert card.locator("a").first.get_attribute("href").startswith("/predictions/")
    page.screenshot(path=artifacts_dir / "upload-390-done.png", full_page=True)
    assert page.evaluate(OVERFLOW) <= 0
    context.close()


def test_times_are_in_the_browsers_time_zone(chromium_browser, live_server, user):
    from datetime import UTC, datetime

    _photo_prediction(user, "coffee", "espresso", "n07920052", [("espresso", "n07920052", 0.9)])
    from predictions.models import Prediction

    Prediction.objects.update(created_at=datetime(2026, 11, 27, 23, 30, tzinfo=UTC))
    context = chromium_browser.new_context(viewport={"width": 390, "height": 900}, timezone_id="Asia/Tokyo")
    page = context.new_page()
    _log_in(page, live_server.url, user.username)

    page.goto(f"{live_server.url}/history/")
    assert "Times are in Asia/Tokyo" in page.locator(".tz-note").inner_text()
    assert page.locator("td[data-label=Uploaded] time").inner_text() == "2026-11-28 08:30"
    context.close()
