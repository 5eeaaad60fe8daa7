"""A person in a real browser (Debian's Chromium driven by Playwright) against a live
server and a real worker: log in, upload photos, watch results arrive, open history."""

from __future__ import annotations

import shutil

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
    labels = page.locator(".card .top-label .label").all_inner_texts()
    assert len(labels) == 3
    assert page.locator(".card").first.locator(".bar-row").count() == 5
    assert "ms" in page.locator(".card .latency").first.inner_text()
    assert any(label in {"tabby cat", "tiger cat", "Egyptian Mau"} for label in labels), labels
    assert "espresso" in labels

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
