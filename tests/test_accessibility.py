"""axe-core (npm, pinned in tests/accessibility/package.json) in Debian's Chromium on every
page and state of the site, the Django admin and the API docs, at a laptop's and a phone's
width, in the light and the dark colour scheme: no serious or critical violation of the
WCAG 2.0 / 2.1 A and AA rules and axe's best practices.

The states are real: a person logs in, uploads real photos to a real worker, sees the
results, asks for a Grad-CAM explanation and reviews; an operator then reads the stats,
the Models and Reviews pages, the admin and Swagger UI. ``make a11y-deps`` (part of
``make test``) installs axe-core; every finding is written to
test-artifacts/axe/violations.json and printed, rule by rule, when the test fails.

axe's script is injected into each page; the site's Content-Security-Policy (no inline
script) would refuse it, so the audit's browser context bypasses the policy (Playwright's
``bypass_csp``): the pages themselves are unchanged, and tests/test_csp_browser.py checks
them under the policy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.live_server_helper import LiveServer

from predictions.models import Correction, ModelVersion, Prediction, PredictionStatus
from predictions.registry import services as registry_services
from tests.conftest import PHOTOS
from tests.factories import UserFactory
from tests.predictions.conftest import _copy_model

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BASE_DIR = Path(__file__).resolve().parent.parent
AXE_SCRIPT = BASE_DIR / "tests" / "accessibility" / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21aa", "best-practice"]
FAILING_IMPACTS = {"serious", "critical"}
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--no-first-run",
]  # fmt: skip
PASSWORD = "correct-horse-battery"  # tests.factories.UserFactory's
PHOTO_NAMES = ("chelsea", "coffee")
ONLY = os.environ.get("AXE_ONLY", "")


@dataclass(frozen=True)
class Variant:
    width: int
    height: int
    scheme: str

    def __str__(self) -> str:
        return f"{self.width}x{self.height} {self.scheme}"


VARIANTS = [
    Variant(1280, 900, "light"),
    Variant(1280, 900, "dark"),
    Variant(390, 844, "light"),
    Variant(390, 844, "dark"),
]


@dataclass(frozen=True)
class Finding:
    variant: str
    state: str
    url: str
    rule: str
    impact: str
    help: str
    help_url: str
    targets: list[str]
    summary: str

    def __str__(self) -> str:
        where = "\n".join(f"      at {target}" for target in self.targets[:6])
        more = f"\n      … and {len(self.targets) - 6} more" if len(self.targets) > 6 else ""
        return (
            f"[{self.variant}] {self.state} ({self.url})\n    {self.impact} {self.rule}: {self.help}\n"
            f"    {self.summary}\n{where}{more}\n    {self.help_url}"
        )


class Audit:
    """axe on each page state; collects every finding, fails at the end with all of them."""

    def __init__(self, artifacts: Path) -> None:
        self.findings: list[Finding] = []
        self.audited: list[str] = []
        self.artifacts = artifacts

    def check(self, page: Page, variant: Variant, state: str) -> None:
        if ONLY and ONLY not in state:  # AXE_ONLY=swagger: audit only the states so named (while fixing)
            return
        page.wait_for_load_state("load")
        page.add_script_tag(path=str(AXE_SCRIPT))
        result: dict[str, Any] = page.evaluate(
            """async (tags) => await axe.run(document, {
                   runOnly: {type: "tag", values: tags}, resultTypes: ["violations"]})""",
            AXE_TAGS,
        )
        self.audited.append(f"{variant} {state}")
        for violation in result["violations"]:
            nodes = violation["nodes"]
            self.findings.append(
                Finding(
                    variant=str(variant),
                    state=state,
                    url=page.url,
                    rule=violation["id"],
                    impact=violation.get("impact") or "",
                    help=violation["help"],
                    help_url=violation["helpUrl"],
                    targets=[" ".join(str(part) for part in node["target"]) for node in nodes],
                    summary=(nodes[0].get("failureSummary") or "").replace("\n", " ")[:400] if nodes else "",
                )
            )
        slug = state.replace(" ", "-").replace("/", "-")
        page.screenshot(path=self.artifacts / f"{variant.width}-{variant.scheme}-{slug}.png", full_page=True)

    def failing(self) -> list[Finding]:
        return [finding for finding in self.findings if finding.impact in FAILING_IMPACTS]

    def write(self) -> Path:
        report = self.artifacts / "violations.json"
        report.write_text(json.dumps([finding.__dict__ for finding in self.findings], indent=2))
        return report


@pytest.fixture
def axe_browser() -> Iterator[Browser]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not AXE_SCRIPT.exists():
        pytest.fail(f"axe-core is not installed at {AXE_SCRIPT}: run `make a11y-deps` (npm ci in tests/accessibility)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def _context(browser: Browser, variant: Variant, live_server: LiveServer, user: User | None = None) -> BrowserContext:
    context = browser.new_context(
        viewport={"width": variant.width, "height": variant.height},
        color_scheme=variant.scheme,  # type: ignore[arg-type]
        bypass_csp=True,  # axe's injected script only; see the module docstring
    )
    context.set_default_timeout(20_000)
    if user is not None:  # a signed-in session without going through the login form each time
        client = Client()
        client.force_login(user)
        session = client.cookies[settings.SESSION_COOKIE_NAME].value
        context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session, "url": live_server.url}])
    return context


def _wait_until(page: Page, expression: str, timeout: float = 30_000) -> None:
    """Poll from the driver (the site's CSP refuses the eval behind wait_for_function)."""
    deadline = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise TimeoutError(f"still false after {timeout / 1000:.0f} s: {expression}")
        page.wait_for_timeout(100)


def test_axe_finds_no_serious_violation_on_any_page(
    axe_browser: Browser,
    live_server: LiveServer,
    celery_worker: subprocess.Popen[bytes],
    active_model: ModelVersion,
    artifacts_dir: Path,
    model_dir: Path,
    tmp_path: Path,
) -> None:
    candidate = _copy_model(model_dir, tmp_path / "models", "2", metrics={"test": {"count": 500, "top1": 0.912}})
    registry_services.model_version_register(model_dir=candidate, candidate=True)
    artifacts = artifacts_dir / "axe"
    artifacts.mkdir(exist_ok=True)
    audit = Audit(artifacts)
    person = UserFactory.create(username="ana.lima")
    operator = UserFactory.create(username="maria.ops", is_staff=True, is_superuser=True)
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not a photo")

    try:
        _audit_every_page(audit, axe_browser, live_server, person=person, operator=operator, bad=bad)
    except Exception as error:  # a state that could not be reached: say after which one, and where
        raise AssertionError(
            f"could not reach the page state after {audit.audited[-1:] or 'none'}; last page in {artifacts}"
        ) from error
    finally:  # what was found so far, also when a page state could not be reached
        report = audit.write()
    failing = audit.failing()
    print(f"\naxe-core on {len(audit.audited)} page states; every finding in {report}")
    assert not failing, (
        f"{len(failing)} serious or critical axe violations (of {len(audit.findings)} findings):\n\n"
        + "\n\n".join(str(finding) for finding in failing)
    )


def _audit_every_page(
    audit: Audit, axe_browser: Browser, live_server: LiveServer, *, person: User, operator: User, bad: Path
) -> None:
    """Each page state at each width and colour scheme; the first pass also makes the data."""
    base = live_server.url
    active_model = ModelVersion.objects.get(is_active=True)
    predictions: list[Prediction] = []
    for index, variant in enumerate(VARIANTS):
        # --- Signed out: log in, sign up, a page that does not exist -----------------------
        context = _context(axe_browser, variant, live_server)
        page = context.new_page()
        page.goto(f"{base}/accounts/login/")
        audit.check(page, variant, "login")
        page.goto(f"{base}/accounts/signup/")
        audit.check(page, variant, "signup")
        page.goto(f"{base}/no-such-page/")
        audit.check(page, variant, "404")
        context.close()

        # --- A person: upload, refused files, results, detail with explanation, history -----
        context = _context(axe_browser, variant, live_server, person)
        page = context.new_page()
        page.goto(f"{base}/")
        page.wait_for_selector("#dropzone")
        audit.check(page, variant, "upload empty")
        page.set_input_files("input[type=file]", str(bad))
        page.click("#submit")
        page.locator("#upload-errors").wait_for()
        audit.check(page, variant, "upload with refused files")

        if index == 0:  # the first pass classifies real photos; the others revisit them
            page.goto(f"{base}/")
            page.set_input_files("input[type=file]", [str(PHOTOS[name].path) for name in PHOTO_NAMES])
            _wait_until(page, f"document.querySelectorAll('#previews img').length === {len(PHOTO_NAMES)}")
            page.click("#submit")
            _wait_until(
                page,
                "document.querySelectorAll('#upload-cards .card[data-status=succeeded]').length === "
                f"{len(PHOTO_NAMES)}",
                timeout=120_000,
            )
            audit.check(page, variant, "upload with results")
            predictions = list(Prediction.objects.filter(user=person).order_by("created_at"))
            assert [p.status for p in predictions] == [PredictionStatus.SUCCEEDED] * len(PHOTO_NAMES)
        else:
            page.goto(f"{base}/results/?" + "&".join(f"id={p.pk}" for p in predictions))
            audit.check(page, variant, "upload with results")

        cat = predictions[0]
        page.goto(f"{base}/predictions/{cat.pk}/?explain={cat.class_id}")
        if index == 0:  # Grad-CAM of the top class, computed by the worker
            page.locator(".explain-classes button").first.click()
            _wait_until(
                page,
                "(() => { const i = document.querySelector('img.explanation-overlay');"
                " return Boolean(i && i.complete && i.naturalWidth > 0); })()",
                timeout=120_000,
            )
            # The owner confirms the cat: a review for the Reviews page and live top-1.
            Correction.objects.get_or_create(
                prediction=cat,
                defaults={"confirmed": True, "label": cat.label, "class_id": cat.class_id,
                          "predicted_label": cat.label, "model_version": cat.model_version, "corrected_by": person,
                          "created_at": cat.created_at, "updated_at": cat.created_at},
            )  # fmt: skip
            page.reload()
        page.wait_for_selector("img.explanation-overlay")
        audit.check(page, variant, "detail with explanation")

        page.goto(f"{base}/history/")
        audit.check(page, variant, "history")
        page.goto(f"{base}/history/?view=list")
        audit.check(page, variant, "history list")
        page.goto(f"{base}/stats/")
        audit.check(page, variant, "stats (user)")
        page.goto(f"{base}/accounts/profile/")
        audit.check(page, variant, "profile")
        context.close()

        # --- An operator: stats of everyone, Models, Reviews, the admin, the API docs ------
        context = _context(axe_browser, variant, live_server, operator)
        page = context.new_page()
        page.goto(f"{base}/stats/")
        page.locator("details.operator > summary").click()
        audit.check(page, variant, "stats (operator)")
        page.goto(f"{base}/models/")
        audit.check(page, variant, "models")
        page.locator("#versions form button").first.click()  # "Activate v2…": the confirmation page
        page.wait_for_selector("#confirm-switch")
        audit.check(page, variant, "models: confirm a switch")
        page.goto(f"{base}/reviews/")
        audit.check(page, variant, "reviews")
        page.goto(f"{base}/admin/")
        audit.check(page, variant, "admin index")
        page.goto(f"{base}/admin/predictions/prediction/")
        audit.check(page, variant, "admin predictions changelist")
        page.goto(f"{base}/admin/predictions/modelversion/")
        audit.check(page, variant, "admin model versions changelist")
        page.goto(f"{base}/admin/predictions/modelversion/{active_model.pk}/change/")
        audit.check(page, variant, "admin model version change page")
        page.goto(f"{base}/api/v1/docs/")
        page.wait_for_selector(".swagger-ui .opblock-tag", timeout=30_000)
        audit.check(page, variant, "api docs (swagger)")
        page.locator(".swagger-ui .opblock-summary").first.click()
        page.wait_for_selector(".swagger-ui .opblock.is-open")
        audit.check(page, variant, "api docs (swagger, an operation open)")
        context.close()
