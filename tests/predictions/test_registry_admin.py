"""Model switches in the admin are never one careless click: activating (from the list or
a version's own page), rolling back and changing an A/B share each show a confirmation
page naming the current and the new version with their measured figures (test top-1,
live top-1, latency), and apply only from its button."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from predictions.models import ModelActivation, ModelVersion
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from tests.factories import UserFactory
from tests.predictions.conftest import _copy_model

CHANGELIST = "admin:predictions_modelversion_changelist"


@pytest.fixture
def v2(active_model: ModelVersion, tmp_path: Path, model_dir: Path) -> ModelVersion:
    """The shipped model exported again as version 2 with a test top-1 of its own."""
    folder = _copy_model(model_dir, tmp_path / "models", "2", metrics={"test": {"count": 500, "top1": 0.912}})
    return registry_services.model_version_register(model_dir=folder)


def _text(html: bytes) -> str:
    """The page's words, tags dropped."""
    return " ".join(re.sub(r"<[^>]+>", " ", html.decode()).split())


def _switches() -> int:
    return ModelActivation.objects.count()


def test_activating_from_the_list_shows_both_versions_figures_first(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion, measured: None
) -> None:
    client.force_login(switcher)
    before = _switches()

    page = client.post(reverse(CHANGELIST), {"action": "activate", "_selected_action": [v2.pk]})

    assert page.status_code == 200
    assert registry_selectors.model_version_active() == active_model
    assert _switches() == before
    text = _text(page.content)
    assert "Activate efficientnet_lite0 v2?" in text
    assert "efficientnet_lite0 v1 (active)" in text
    assert "efficientnet_lite0 v2 (available)" in text
    assert "91.2 % (test.top1)" in text  # the new version's card
    assert "75.0 % of 4 reviewed" in text  # the active version's live top-1
    assert "40 ms / 20 ms" in text  # its median latency
    assert 'value="Yes, activate efficientnet_lite0 v2"' in page.content.decode()

    confirm = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.content.decode()))
    client.post(reverse(CHANGELIST), confirm)

    assert registry_selectors.model_version_active() == v2
    assert _switches() == before + 1


def test_a_confirmation_for_another_active_version_asks_again(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion, tmp_path: Path, model_dir: Path
) -> None:
    client.force_login(switcher)
    page = client.post(reverse(CHANGELIST), {"action": "activate", "_selected_action": [v2.pk]})
    confirm = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.content.decode()))
    v3 = registry_services.model_version_register(model_dir=_copy_model(model_dir, tmp_path / "more", "3"))
    registry_services.model_version_activate(model_version=v3)  # someone else, meanwhile

    again = client.post(reverse(CHANGELIST), confirm)

    assert registry_selectors.model_version_active() == v3
    assert "The active version changed meanwhile" in _text(again.content)
    assert "Activate efficientnet_lite0 v2?" in _text(again.content)


def test_a_versions_page_has_an_activate_button_that_asks_first(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion
) -> None:
    client.force_login(switcher)
    activate_url = reverse("admin:predictions_modelversion_activate", args=[v2.pk])

    change_page = client.get(reverse("admin:predictions_modelversion_change", args=[v2.pk])).content.decode()
    assert f'href="{activate_url}"' in change_page
    active_page = client.get(reverse("admin:predictions_modelversion_change", args=[active_model.pk]))
    assert b"Activate\xe2\x80\xa6" not in active_page.content  # the active one has none

    page = client.get(activate_url)
    assert page.status_code == 200
    assert "Activate efficientnet_lite0 v2?" in _text(page.content)
    assert registry_selectors.model_version_active() == active_model

    response = client.post(activate_url, {"confirmed_switch": "yes", "active_shown": active_model.pk})
    assert response.status_code == 302
    assert registry_selectors.model_version_active() == v2


def test_the_activate_page_needs_the_permission(client: Client, active_model: ModelVersion, v2: ModelVersion) -> None:
    client.force_login(UserFactory.create(is_staff=True))
    url = reverse("admin:predictions_modelversion_activate", args=[v2.pk])

    assert client.get(url).status_code == 403
    assert client.post(url, {"confirmed_switch": "yes", "active_shown": active_model.pk}).status_code == 403
    assert registry_selectors.model_version_active() == active_model


def test_rolling_back_shows_where_to_and_applies_from_the_button(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion, measured: None
) -> None:
    registry_services.model_version_activate(model_version=v2)
    client.force_login(switcher)

    page = client.post(reverse(CHANGELIST), {"action": "rollback", "_selected_action": [v2.pk]})

    assert registry_selectors.model_version_active() == v2
    text = _text(page.content)
    assert "Roll back from efficientnet_lite0 v2 (active) to efficientnet_lite0 v1?" in text
    assert "75.0 % of 4 reviewed" in text
    assert "91.2 %" in text

    confirm = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.content.decode()))
    client.post(reverse(CHANGELIST), confirm)
    assert registry_selectors.model_version_active() == active_model
    assert ModelActivation.objects.first().kind == "rollback"  # type: ignore[union-attr]


def test_a_new_ab_share_is_confirmed_before_it_applies(
    client: Client, switcher: User, active_model: ModelVersion, tmp_path: Path, model_dir: Path, measured: None
) -> None:
    folder = _copy_model(model_dir, tmp_path / "models", "2")
    candidate = registry_services.model_version_register(model_dir=folder, candidate=True)
    client.force_login(switcher)
    url = reverse("admin:predictions_modelversion_change", args=[candidate.pk])

    page = client.post(url, {"traffic_percent": 30, "_save": "Save"})

    candidate.refresh_from_db()
    assert page.status_code == 200
    assert candidate.traffic_percent == 0
    text = _text(page.content)
    assert "Give efficientnet_lite0 v2 30 % of traffic (now 0 %)?" in text
    assert "efficientnet_lite0 v1 (active)" in text
    assert "75.0 % of 4 reviewed" in text

    confirm = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', page.content.decode()))
    assert client.post(url, confirm).status_code == 302
    candidate.refresh_from_db()
    assert candidate.traffic_percent == 30


def test_admin_writes_dates_as_the_site_does(client: Client, switcher: User, active_model: ModelVersion) -> None:
    """The admin's lists use the site's ISO dates and 24-hour clock, not "Dec. 4, 2026, 8:16 p.m."."""
    client.force_login(switcher)
    page = _text(client.get(reverse(CHANGELIST)).content)
    registered = timezone.localtime(active_model.created_at).strftime("%Y-%m-%d %H:%M")
    assert registered in page
    assert "p.m." not in page
    assert "a.m." not in page
