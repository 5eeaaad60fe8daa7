"""What a person sees on the pages without JavaScript: counts, empty states, filter
errors, local times, the detail page, the upload fragment the page's script inserts,
the profile, the favicon and the error pages."""

from __future__ import annotations

from datetime import UTC, datetime

from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import Settings

from predictions.models import ModelVersion, Prediction, PredictionStatus
from tests.conftest import photo_bytes
from tests.factories import OperatorFactory, PredictionFactory

HISTORY = reverse("predictions:history")


def _succeeded(user: User, label: str = "tabby cat", **fields: object) -> Prediction:
    top = [
        {"label": label, "class_id": "n02123045", "score": 0.8},
        {"label": "tiger cat", "class_id": "n02123159", "score": 0.1},
    ]
    return PredictionFactory.create(
        user=user, status=PredictionStatus.SUCCEEDED, label=label, class_id="n02123045", confidence=0.8,
        top_predictions=top, completed_at=timezone.now(), total_ms=120.0, queue_ms=10.0, preprocess_ms=5.0,
        inference_ms=100.0, **fields,
    )  # fmt: skip


# --- History ---------------------------------------------------------------------------


def test_history_counts_in_words_with_the_right_plural(user_client: Client, user: User) -> None:
    _succeeded(user)
    assert "1 prediction<" in user_client.get(HISTORY).content.decode().replace(" ·", "<").replace("\n", "<")

    _succeeded(user)
    page = user_client.get(HISTORY).content.decode()
    assert "2 predictions" in page
    assert "1 predictions" not in page


def test_history_empty_states_say_why(user_client: Client, user: User) -> None:
    page = user_client.get(HISTORY).content.decode()
    assert "No predictions yet" in page
    assert "Clear filters" not in page

    _succeeded(user, label="espresso")
    page = user_client.get(HISTORY, {"label": "zebra"}).content.decode()
    assert "No predictions match these filters" in page
    assert "No predictions yet" not in page
    assert f'href="{HISTORY}"' in page
    assert "Clear filters" in page


def test_history_says_when_the_date_range_is_reversed(user_client: Client, user: User) -> None:
    _succeeded(user)

    response = user_client.get(HISTORY, {"created_after": "2026-11-20", "created_before": "2026-11-10"})

    page = response.content.decode()
    assert response.status_code == 200
    assert "The date range is reversed" in page
    assert "2026-11-20" in page
    assert "No predictions match" not in page
    assert 'class="history' not in page


def test_history_filter_controls_all_have_labels(user_client: Client, user: User) -> None:
    page = user_client.get(HISTORY).content.decode()
    for field in ("id_label", "id_status", "id_created_after", "id_created_before"):
        assert f'<label for="{field}">' in page


def test_times_are_shown_in_the_browsers_zone_and_say_which(user_client: Client, user: User) -> None:
    _succeeded(user, created_at=datetime(2026, 11, 27, 23, 30, tzinfo=UTC))

    assert "2026-11-27 23:30" in user_client.get(HISTORY).content.decode()
    user_client.cookies["tz"] = "Asia/Tokyo"
    page = user_client.get(HISTORY).content.decode()
    assert "2026-11-28 08:30" in page
    assert "Asia/Tokyo" in page

    # ...and the date filters read days in that zone: 23:30 UTC is the 28th in Tokyo.
    assert "1 prediction" in user_client.get(HISTORY, {"created_after": "2026-11-28"}).content.decode()


def test_an_encoded_time_zone_cookie_is_read_too(user_client: Client, user: User) -> None:
    _succeeded(user, created_at=datetime(2026, 11, 27, 23, 30, tzinfo=UTC))
    user_client.cookies["tz"] = "Asia%2FTokyo"

    assert "2026-11-28 08:30" in user_client.get(HISTORY).content.decode()


def test_an_unknown_time_zone_cookie_is_ignored(user_client: Client, user: User) -> None:
    _succeeded(user, created_at=datetime(2026, 11, 27, 23, 30, tzinfo=UTC))
    user_client.cookies["tz"] = "../../etc/passwd"

    assert "2026-11-27 23:30" in user_client.get(HISTORY).content.decode()


def test_labels_read_in_one_casing(user_client: Client, user: User) -> None:
    _succeeded(user, label="Golden Retriever")
    _succeeded(user, label="garbage truck")

    page = user_client.get(HISTORY).content.decode()

    assert "Golden retriever" in page
    assert "Golden Retriever" not in page
    assert "garbage truck" in page  # the first letter is capitalised by the stylesheet


# --- Detail page -----------------------------------------------------------------------


def test_detail_page_has_the_image_chart_timings_and_a_way_back(user_client: Client, user: User) -> None:
    prediction = _succeeded(user)
    url = reverse("predictions:detail", args=[prediction.id])

    page = user_client.get(url, {"back": "label=cat&status=succeeded"}).content.decode()

    assert "1 result" not in page
    assert "<h1" in page
    assert prediction.original_filename in page
    assert f'href="{reverse("predictions:image", args=[prediction.id])}"' in page
    assert "Open full size" in page
    assert page.count('class="bar-row"') == 2
    assert "80.0 %" in page
    assert "10.0 %" in page
    assert "120 ms" in page
    assert "100.0 ms" in page
    assert "No: the model ran on this image" in page
    assert f'href="{HISTORY}?label=cat&amp;status=succeeded"' in page
    assert reverse("predictions:delete", args=[prediction.id]) in page


def test_deleting_from_the_detail_page_returns_to_the_filtered_history(user_client: Client, user: User) -> None:
    prediction = _succeeded(user)

    response = user_client.post(reverse("predictions:delete", args=[prediction.id]), {"back": "label=cat&page=1"})

    assert response.status_code == 302
    assert response["Location"] == f"{HISTORY}?label=cat&page=1"
    assert not Prediction.objects.filter(id=prediction.id).exists()


def test_result_tiles_link_to_the_detail_page_and_name_their_image(user_client: Client, user: User) -> None:
    prediction = _succeeded(user)

    card = user_client.get(reverse("predictions:card", args=[prediction.id])).content.decode()

    # One link per tile (the picture is decoration of it), named by the label and the file.
    assert card.count(f'href="{reverse("predictions:detail", args=[prediction.id])}"') == 2
    assert 'tabindex="-1" aria-hidden="true"><img' in card
    assert f'<span class="visually-hidden">tabby cat: </span>{prediction.original_filename}</a>' in card
    assert 'title="n02123045"' not in card  # tooltips show the label, not the WordNet id


# --- Upload ----------------------------------------------------------------------------


def test_upload_page_states_the_limits_before_uploading(user_client: Client) -> None:
    page = user_client.get(reverse("predictions:upload")).content.decode()

    assert "up to 20 images at a time" in page
    assert "at most 20 MB each" in page
    assert "JPEG, PNG" in page


def test_the_pages_script_gets_each_result_card_as_a_fragment(user_client: Client, user: User) -> None:
    image = SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"), content_type="image/jpeg")

    response = user_client.post(
        reverse("predictions:upload"), {"images": [image], "top_k": 3}, headers={"X-Requested-With": "fetch"}
    )

    prediction = Prediction.objects.get(user=user)
    assert response.status_code == 201
    body = response.content.decode()
    assert f'id="card-{prediction.id}"' in body
    assert "<html" not in body
    assert 'data-pending="true"' in body


def test_a_refused_file_comes_back_as_a_readable_fragment(user_client: Client, user: User) -> None:
    bad = SimpleUploadedFile("notes.jpg", b"this is not a photo", content_type="image/jpeg")

    response = user_client.post(
        reverse("predictions:upload"), {"images": [bad], "top_k": 3}, headers={"X-Requested-With": "fetch"}
    )

    assert 400 <= response.status_code < 500
    assert 'class="error upload-error"' in response.content.decode()
    assert "notes.jpg" in response.content.decode()
    assert not Prediction.objects.exists()


# --- Stats -----------------------------------------------------------------------------


def test_stats_for_a_person_have_no_operator_tables_and_no_user_count(user_client: Client, user: User) -> None:
    _succeeded(user)

    page = user_client.get("/stats/").content.decode()

    assert "1 users" not in page
    assert ">user<" not in page
    assert "For operators" not in page
    assert "Latency per day" not in page
    # One image: a sentence, not a chart of one bar.
    assert "1 image on " in page
    assert "vchart" not in page
    assert "Each label was given once" in page


def test_stats_for_an_operator_keep_the_latency_tables(client: Client, user: User) -> None:
    _succeeded(user)
    client.force_login(OperatorFactory.create())

    page = client.get("/stats/").content.decode()

    assert "For operators" in page
    assert "Latency per day" in page
    assert ">user<" in page


# --- Profile ---------------------------------------------------------------------------


def test_profile_first_token_and_rotation_say_what_happened(user_client: Client) -> None:
    page = user_client.post(reverse("accounts:profile"), follow=True).content.decode()
    assert "Your API token was created." in page
    assert "no longer works" not in page
    assert "Replace the token" in page
    assert 'data-copy-target="api-token"' in page

    page = user_client.post(reverse("accounts:profile"), follow=True).content.decode()
    assert "the old one no longer works" in page


def test_password_change_through_djangos_views(user_client: Client, user: User) -> None:
    assert reverse("password_change") in user_client.get(reverse("accounts:profile")).content.decode()

    response = user_client.post(
        reverse("password_change"),
        {
            "old_password": "correct-horse-battery",
            "new_password1": "blue-lantern-4182",
            "new_password2": "blue-lantern-4182",
        },
        follow=True,
    )

    assert "Password changed" in response.content.decode()
    user.refresh_from_db()
    assert user.check_password("blue-lantern-4182")


# --- Navigation, favicon, error pages -----------------------------------------------------


def test_navigation_marks_the_current_page_and_has_a_skip_link(user_client: Client) -> None:
    page = user_client.get(HISTORY).content.decode()

    assert 'href="#main"' in page
    assert 'id="main"' in page
    assert f'<a href="{HISTORY}" aria-current="page">History</a>' in page
    assert 'aria-live="polite"' in page


def test_favicon_is_served(client: Client) -> None:
    response = client.get("/favicon.ico")

    assert response.status_code == 200
    assert response["Content-Type"] == "image/x-icon"
    assert response.getvalue()[:4] == b"\x00\x00\x01\x00"  # an ICO header


def test_unknown_page_gets_the_friendly_404_with_debug_off(client: Client, settings: Settings) -> None:
    settings.DEBUG = False

    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert "This page does not exist" in response.content.decode()


def test_unknown_page_lists_no_urls_with_debug_on(client: Client, settings: Settings) -> None:
    settings.DEBUG = True

    response = client.get("/no-such-page/")

    assert response.status_code == 404
    assert "This page does not exist" in response.content.decode()
    assert "URLconf" not in response.content.decode()
    assert client.get("/api/v1/predictions/not-a-uuid/").status_code in (401, 403, 404)


# --- Admin -----------------------------------------------------------------------------


def test_admin_prediction_page_shows_the_image_and_readable_top_k(client: Client, user: User) -> None:
    prediction = _succeeded(user)
    client.force_login(OperatorFactory.create())

    page = client.get(reverse("admin:predictions_prediction_change", args=[prediction.id])).content.decode()

    assert reverse("admin-prediction-image", args=[prediction.id]) in page
    assert "/media-not-served/" not in page
    assert "<th>Label</th>" in page
    assert "80.0%" in page
    assert '"score"' not in page

    listing = client.get(reverse("admin:predictions_prediction_changelist")).content.decode()
    thumbnail = f'src="{reverse("admin-prediction-image", args=[prediction.id])}?size=thumb"'
    assert thumbnail in listing
    assert f'alt="tabby cat: {prediction.original_filename}"' in listing
    assert "thumbnails/" not in listing  # the stored file's path, not a picture


def test_admin_model_version_metadata_is_a_table(admin_client: Client, db: None) -> None:
    version = ModelVersion.objects.create(
        name="lite", version="9", path="/nowhere", metrics={"test_photos": {"top1_accuracy": 0.8}},
        metadata={"input_size": 224, "format_version": 1},
    )  # fmt: skip

    page = admin_client.get(reverse("admin:predictions_modelversion_change", args=[version.pk])).content.decode()

    assert "test_photos.top1_accuracy" in page
    assert '<th scope="row">input_size</th><td>224</td>' in page


def test_buttons_on_the_detail_page_keep_its_way_back_to_the_history(user_client: Client, user: User) -> None:
    prediction = _succeeded(user)
    url = reverse("predictions:detail", args=[prediction.id])
    assert 'name="back" value="label=cat"' in user_client.get(url, {"back": "label=cat"}).content.decode()

    response = user_client.post(reverse("predictions:confirm", args=[prediction.id]), {"back": "label=cat"})

    assert response["Location"] == f"{url}?back=label%3Dcat#review-{prediction.id}"


def test_the_500_page_renders_without_a_request(db: None) -> None:
    from django.template.loader import render_to_string

    page = render_to_string("500.html")

    assert "Something went wrong on our side" in page
    assert "Traceback" not in page
