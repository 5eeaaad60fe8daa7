"""The Models page in a real browser (Debian's Chromium, Playwright) at a laptop's and a
phone's width: the versions side by side with their figures, the A/B share and its live
comparison, and an activation that asks first and then switches."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pytest_django.live_server_helper import LiveServer

from predictions.models import ModelVersion
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from tests.factories import CorrectionFactory, SucceededPredictionFactory, UserFactory
from tests.predictions import test_browser
from tests.predictions.conftest import _copy_model
from tests.predictions.test_browser import OVERFLOW, _log_in

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from playwright.sync_api import Browser

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

chromium_browser = test_browser.chromium_browser  # one Chromium per test, as the journey's


@pytest.mark.parametrize(("width", "height"), [(1280, 900), (390, 844)])
def test_models_page_shows_the_ab_share_and_activates_only_after_confirming(
    chromium_browser: Browser,
    live_server: LiveServer,
    active_model: ModelVersion,
    switcher: User,
    model_dir: Path,
    tmp_path: Path,
    artifacts_dir: Path,
    width: int,
    height: int,
) -> None:
    folder = _copy_model(model_dir, tmp_path / "models", "2", metrics={"test": {"count": 500, "top1": 0.912}})
    v2 = registry_services.model_version_register(model_dir=folder, candidate=True)
    registry_services.model_version_set_traffic(model_version=v2, traffic_percent=20)
    owner = UserFactory.create()
    for confirmed in (True, True, False):
        prediction = SucceededPredictionFactory.create(user=owner, model_version=active_model, total_ms=40.0)
        CorrectionFactory.create(
            prediction=prediction, confirmed=confirmed, label=prediction.label if confirmed else "tabby cat",
            class_id="n02123159" if confirmed else "n02123045",
        )  # fmt: skip
    context = chromium_browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(15_000)
    page = context.new_page()
    _log_in(page, live_server.url, switcher.username)

    page.click("nav a:has-text('Models')")
    page.wait_for_selector("#versions")
    page.screenshot(path=artifacts_dir / f"models-{width}.png", full_page=True)
    assert page.evaluate(OVERFLOW) <= 0  # nothing scrolls sideways, at either width
    active_card = page.locator("#versions .op-card.is-active")
    assert "Active classifies 80 % of users" in " ".join(active_card.inner_text().split())
    assert "66.7 % of 3 reviews" in " ".join(active_card.inner_text().split())
    assert "efficientnet_lite0 v2 gets 20 % of users" in page.locator("#ab").inner_text()
    comparison = page.locator("#ab-comparison tbody tr")
    assert comparison.count() == 2
    assert "66.7 % of 3 reviews" in comparison.nth(0).inner_text()
    assert "no reviews" in comparison.nth(1).inner_text()

    page.click("#versions button:has-text('Activate v2…')")
    page.wait_for_selector("#confirm-switch")
    page.screenshot(path=artifacts_dir / f"models-confirm-{width}.png", full_page=True)
    assert page.evaluate(OVERFLOW) <= 0
    assert page.locator("h1").inner_text() == "Activate efficientnet_lite0 v2?"
    assert registry_selectors.model_version_active() == active_model  # asked, not switched

    page.click("#confirm-switch")
    page.wait_for_selector(".messages")
    assert "efficientnet_lite0 v2 is now used for new predictions." in page.locator(".messages").inner_text()
    assert registry_selectors.model_version_active() == v2
    assert "v2" in page.locator("#versions .op-card.is-active h3").inner_text()
    assert page.locator("#versions .op-card.is-active").evaluate("card => document.activeElement !== card") is True
    context.close()
