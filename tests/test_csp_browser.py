"""The Content-Security-Policy in a real browser (Debian's Chromium driven by Playwright):
every page, the admin's and Swagger UI included, works under it with no violation
reported, and the bar charts still draw their lengths (classes, not style attributes)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import PHOTOS
from tests.factories import CorrectionFactory, ModelVersionFactory, OperatorFactory, SucceededPredictionFactory

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
# Runs before every page's own scripts: records what the policy refused.
RECORD_VIOLATIONS = """
window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.violatedDirective} ${event.blockedURI} ${event.sourceFile}:${event.lineNumber}`);
});
"""


@pytest.fixture
def browser_page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which("chromium") and not shutil.os.path.exists(CHROMIUM):  # type: ignore[attr-defined]
        pytest.fail("Chromium is not installed (bin/ensure-system-deps installs it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.add_init_script(RECORD_VIOLATIONS)
        yield context.new_page()
        context.close()
        browser.close()


def test_no_page_breaks_the_content_security_policy(browser_page: Any, live_server: Any) -> None:
    operator = OperatorFactory.create(username="maria.rodriguez", is_superuser=True)
    version = ModelVersionFactory.create()
    scores = [
        {"label": "tabby cat", "class_id": "n02123045", "score": 0.8},
        {"label": "tiger cat", "class_id": "n02123159", "score": 0.2},
    ]
    cat = SucceededPredictionFactory.create(
        user=operator, model_version=version, label="tabby cat", class_id="n02123045", top_predictions=scores
    )
    CorrectionFactory.create(prediction=SucceededPredictionFactory.create(user=operator, model_version=version))
    page = browser_page
    violations: dict[str, list[str]] = {}
    refused: list[str] = []
    page.on(
        "console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None
    )

    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", operator.username)
    page.fill("#id_password", "correct-horse-battery")
    page.click("main button[type=submit]")
    page.wait_for_selector("#dropzone")
    page.set_input_files("input[type=file]", [str(PHOTOS["chelsea"].path)])  # previews are blob: images
    page.wait_for_selector("#previews img")
    violations["upload"] = page.evaluate("window.cspViolations")

    paths = {
        "detail": f"/predictions/{cat.id}/",
        "results": f"/results/?id={cat.id}",
        "history": "/history/",
        "stats": "/stats/",
        "profile": "/accounts/profile/",
        "admin-log": "/admin/predictions/prediction/",
        "admin-prediction": f"/admin/predictions/prediction/{cat.id}/change/",
        "admin-reviews": "/admin/predictions/correction/",
        "admin-version": f"/admin/predictions/modelversion/{version.pk}/change/",
        "admin-lockouts": "/admin/axes/accessattempt/",
    }
    for name, path in paths.items():
        page.goto(f"{live_server.url}{path}")
        page.wait_for_load_state("load")
        if name == "detail":  # the 80 % bar is drawn 4 times as long as the 20 % one
            widths = page.locator(".bar-fill").evaluate_all(
                "bars => bars.map((bar) => bar.getBoundingClientRect().width)"
            )
            assert len(widths) == 2
            assert widths[0] == pytest.approx(4 * widths[1], rel=0.05), widths
        violations[name] = page.evaluate("window.cspViolations")

    page.goto(f"{live_server.url}/api/v1/docs/")
    page.wait_for_selector(".opblock", timeout=30_000)  # Swagger UI ran and rendered the operations
    violations["swagger"] = page.evaluate("window.cspViolations")

    assert {name: found for name, found in violations.items() if found} == {}
    assert refused == []
