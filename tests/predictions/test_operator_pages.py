"""The operator pages in the site's own look: Models (versions with their measured
figures, the A/B test, switches confirmed first) and Reviews (filter, export). Only
accounts with the permissions see them or their links; everyone else gets 403."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.urls import reverse

from predictions.models import ModelActivation, ModelVersion
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from tests.factories import CorrectionFactory, OperatorFactory, SucceededPredictionFactory, UserFactory
from tests.predictions.conftest import _copy_model


@pytest.fixture
def v2(active_model: ModelVersion, tmp_path: Path, model_dir: Path) -> ModelVersion:
    """The shipped model exported again as candidate version 2 with a test top-1 of its own."""
    folder = _copy_model(model_dir, tmp_path / "models", "2", metrics={"test": {"count": 500, "top1": 0.912}})
    return registry_services.model_version_register(model_dir=folder, candidate=True)


def _text(html: bytes) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html.decode()).split())


def _hidden(html: bytes) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html.decode()))


@pytest.mark.django_db
@pytest.mark.parametrize("url_name", ["models:list", "reviews:list", "reviews:export"])
def test_a_normal_user_gets_403_and_no_link(user_client: Client, url_name: str) -> None:
    assert user_client.get(reverse(url_name)).status_code == 403
    home = user_client.get(reverse("predictions:upload")).content.decode()
    assert reverse("models:list") not in home
    assert reverse("reviews:list") not in home


@pytest.mark.django_db
def test_a_normal_user_cannot_switch_models(user_client: Client, active_model: ModelVersion, v2: ModelVersion) -> None:
    response = user_client.post(reverse("models:activate", args=[v2.pk]), {"confirmed_switch": "yes"})
    assert response.status_code == 403
    assert registry_selectors.model_version_active() == active_model


@pytest.mark.django_db
def test_signed_out_visitors_are_sent_to_log_in(client: Client) -> None:
    for url_name in ("models:list", "reviews:list"):
        response = client.get(reverse(url_name))
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_each_page_and_link_follows_its_own_permission(client: Client, switcher: User) -> None:
    """change_modelversion opens Models (not Reviews); view_prediction opens Reviews (not Models)."""
    client.force_login(switcher)
    assert client.get(reverse("models:list")).status_code == 200
    assert client.get(reverse("reviews:list")).status_code == 403
    nav = client.get(reverse("predictions:upload")).content.decode()
    assert f'href="{reverse("models:list")}"' in nav
    assert f'href="{reverse("reviews:list")}"' not in nav

    reader = OperatorFactory.create()
    client.force_login(reader)
    assert client.get(reverse("reviews:list")).status_code == 200
    assert client.get(reverse("models:list")).status_code == 403
    nav = client.get(reverse("predictions:upload")).content.decode()
    assert f'href="{reverse("reviews:list")}"' in nav
    assert f'href="{reverse("models:list")}"' not in nav


@pytest.mark.django_db
def test_models_page_shows_versions_with_their_figures_in_words(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion, measured: None
) -> None:
    client.force_login(switcher)
    text = _text(client.get(reverse("models:list")).content)
    assert "Active classifies everyone" in text
    assert "75 % of 4 reviews (3 confirmed)" in text  # live top-1 with its sample
    assert "91.2 % on 500 images" in text  # v2's card, in words
    assert "half within 40 ms" in text
    assert "test_photos.top1_accuracy" not in text  # no raw model-card keys
    assert "Activate v2…" in text
    assert "Activate v1…" not in text  # the active one has no button


@pytest.mark.django_db
def test_activating_asks_first_with_both_versions_then_switches(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion, measured: None
) -> None:
    client.force_login(switcher)
    before = ModelActivation.objects.count()

    page = client.post(reverse("models:activate", args=[v2.pk]))

    assert page.status_code == 200
    assert registry_selectors.model_version_active() == active_model  # nothing switched yet
    text = _text(page.content)
    assert "Activate efficientnet_lite0 v2?" in text
    assert "Active now: efficientnet_lite0 v1" in text
    assert "To be activated: efficientnet_lite0 v2" in text
    assert "75 % of 4 reviews" in text

    done = client.post(reverse("models:activate", args=[v2.pk]), _hidden(page.content), follow=True)

    assert registry_selectors.model_version_active() == v2
    assert ModelActivation.objects.count() == before + 1
    assert ModelActivation.objects.first().activated_by == switcher  # type: ignore[union-attr]
    assert "efficientnet_lite0 v2 is now used for new predictions." in _text(done.content)


@pytest.mark.django_db
def test_a_stale_confirmation_asks_again(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion, tmp_path: Path, model_dir: Path
) -> None:
    client.force_login(switcher)
    page = client.post(reverse("models:activate", args=[v2.pk]))
    v3 = registry_services.model_version_register(model_dir=_copy_model(model_dir, tmp_path / "more", "3"))
    registry_services.model_version_activate(model_version=v3)  # someone else, meanwhile

    again = client.post(reverse("models:activate", args=[v2.pk]), _hidden(page.content))

    assert registry_selectors.model_version_active() == v3
    assert "The active version changed meanwhile" in _text(again.content)


@pytest.mark.django_db
def test_ab_share_is_confirmed_then_shown_with_its_live_comparison(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion, measured: None
) -> None:
    client.force_login(switcher)
    page = client.post(reverse("models:traffic", args=[v2.pk]), {"traffic_percent": "20"})
    assert "Give efficientnet_lite0 v2 20 % of users (now 0 %)?" in _text(page.content)
    v2.refresh_from_db()
    assert v2.traffic_percent == 0

    client.post(reverse("models:traffic", args=[v2.pk]), _hidden(page.content))

    v2.refresh_from_db()
    assert v2.traffic_percent == 20
    text = _text(client.get(reverse("models:list")).content)
    assert "efficientnet_lite0 v2 gets 20 % of users" in text
    assert "Active classifies 80 % of users" in text
    comparison = text[text.index("Live comparison") :]
    assert "Active v1 4 75 % of 4 reviews" in comparison
    assert "Candidate v2 0 no reviews" in comparison


@pytest.mark.django_db
def test_a_share_out_of_range_or_for_a_non_candidate_is_refused_with_words(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion
) -> None:
    client.force_login(switcher)
    refused = client.post(reverse("models:traffic", args=[v2.pk]), {"traffic_percent": "150"}, follow=True)
    assert "whole number from 0 to 100" in _text(refused.content)
    refused = client.post(reverse("models:traffic", args=[active_model.pk]), {"traffic_percent": "10"}, follow=True)
    assert "only a candidate version gets a share of traffic" in _text(refused.content)
    v2.refresh_from_db()
    assert v2.traffic_percent == 0


@pytest.mark.django_db
def test_rolling_back_is_confirmed_first(
    client: Client, switcher: User, active_model: ModelVersion, v2: ModelVersion
) -> None:
    registry_services.model_version_activate(model_version=v2)
    client.force_login(switcher)
    assert "Roll back to v1…" in _text(client.get(reverse("models:list")).content)

    page = client.post(reverse("models:rollback"))
    assert "Roll back from efficientnet_lite0 v2 to v1?" in _text(page.content)
    assert registry_selectors.model_version_active() == v2

    client.post(reverse("models:rollback"), _hidden(page.content))
    assert registry_selectors.model_version_active() == active_model


@pytest.mark.django_db
def test_reviews_page_filters_and_exports_what_it_shows(client: Client, active_model: ModelVersion) -> None:
    owner = UserFactory.create(username="ana")
    confirmed = SucceededPredictionFactory.create(user=owner, model_version=active_model, label="espresso")
    CorrectionFactory.create(prediction=confirmed, confirmed=True, label="espresso", class_id="n07920052")
    corrected = SucceededPredictionFactory.create(user=owner, model_version=active_model, label="tiger cat")
    CorrectionFactory.create(prediction=corrected, label="tabby cat", class_id="n02123045")
    client.force_login(OperatorFactory.create())

    text = _text(client.get(reverse("reviews:list")).content)
    assert "2 reviews : 1 confirmed, 1 corrected" in text
    assert "the model was right in 50 % of them" in text
    only_corrections = client.get(reverse("reviews:list"), {"kind": "corrections"})
    text = _text(only_corrections.content)
    assert "Tiger cat → Tabby cat" in text or "tiger cat → tabby cat" in text
    assert "Confirmed espresso" not in text

    export = client.get(reverse("reviews:export"), {"kind": "corrections"})
    assert export.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(b"".join(export.streaming_content))).namelist()  # type: ignore[attr-defined]
    assert any(name.startswith("tabby cat/") for name in names)
    assert not any(name.startswith("espresso/") for name in names)

    thumb = client.get(reverse("reviews:image", args=[corrected.pk]))
    assert thumb.status_code == 200


@pytest.mark.django_db
def test_view_prediction_permission_alone_reads_reviews(client: Client) -> None:
    """Not staff: the policy is the permission, never ``is_staff``."""
    reader = UserFactory.create()
    reader.user_permissions.add(
        Permission.objects.get(content_type__app_label="predictions", codename="view_prediction")
    )
    client.force_login(reader)
    assert client.get(reverse("reviews:list")).status_code == 200


@pytest.mark.django_db
def test_models_page_shows_a_reprocess_jobs_progress(
    client: Client, switcher: User, active_model: ModelVersion
) -> None:
    from django.utils import timezone

    from predictions.models import ReprocessJob

    job = ReprocessJob.objects.create(model_version=active_model, total=3, created_at=timezone.now())
    for status in ("succeeded", "succeeded", "pending"):
        SucceededPredictionFactory.create(model_version=active_model, reprocess_job=job, status=status)
    client.force_login(switcher)

    text = _text(client.get(reverse("models:list")).content)

    assert f"Job {job.pk} : every prediction with v1" in text or f"Job {job.pk} : only predictions" in text
    assert "2 of 3 done (67 %), 1 to go." in text
    assert "running" in text
