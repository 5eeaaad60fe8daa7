"""Pages as a logged-in person uses them: upload, results, history, privacy."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from pytest_django import DjangoCaptureOnCommitCallbacks, Settings

from predictions.models import Prediction, PredictionStatus
from tests.conftest import photo_bytes
from tests.factories import PredictionFactory


def test_pages_require_login(client: Client) -> None:
    for name in ["predictions:upload", "predictions:history"]:
        response = client.get(reverse(name))
        assert response.status_code == 302
        assert "/accounts/login/" in response["Location"]


def test_upload_one_image_redirects_to_its_result(user_client: Client, user: User) -> None:
    image = SimpleUploadedFile("cat.jpg", photo_bytes("chelsea"), content_type="image/jpeg")

    response = user_client.post(reverse("predictions:upload"), {"images": [image], "top_k": 5})

    prediction = Prediction.objects.get(user=user)
    assert response.status_code == 302
    assert response["Location"] == reverse("predictions:detail", args=[prediction.id])
    page = user_client.get(response["Location"])
    assert b"Pending" in page.content
    assert b"cat.jpg" in page.content


def test_upload_several_images_shows_them_together(user_client: Client, user: User) -> None:
    images = [
        SimpleUploadedFile(f"p{i}.png", photo_bytes(name, "PNG"))
        for i, name in enumerate(["coffee", "rocket", "chelsea"])
    ]

    response = user_client.post(reverse("predictions:upload"), {"images": images, "top_k": 3}, follow=True)

    assert response.status_code == 200
    assert len(response.context["predictions"]) == 3
    assert Prediction.objects.filter(user=user, top_k=3).count() == 3


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("notes.txt", b"just some text", b"not an image"),
        ("empty.jpg", b"", b"empty"),
        ("broken.jpg", photo_bytes("chelsea")[:3000], b"damaged or incomplete"),
    ],
)
def test_bad_files_get_a_form_error_and_leave_nothing(
    user_client: Client, media_dir: Path, name: str, content: bytes, message: bytes
) -> None:
    files_before = sorted(media_dir.rglob("*"))

    response = user_client.post(
        reverse("predictions:upload"), {"images": [SimpleUploadedFile(name, content)], "top_k": 5}
    )

    assert 400 <= response.status_code < 500
    assert message in response.content
    assert name.encode() in response.content
    assert Prediction.objects.count() == 0
    assert sorted(media_dir.rglob("*")) == files_before


def test_a_result_tile_is_compact_and_its_page_has_the_chart_and_latency(user_client: Client, user: User) -> None:
    prediction = PredictionFactory.create(
        user=user, status=PredictionStatus.SUCCEEDED, label="tabby cat", class_id="n02123045",
        confidence=0.8, top_predictions=[{"label": "tabby cat", "class_id": "n02123045", "score": 0.8},
                                         {"label": "tiger cat", "class_id": "n02123159", "score": 0.1}],
        queue_ms=5, preprocess_ms=3, inference_ms=14, total_ms=40, completed_at=timezone.now(),
    )  # fmt: skip

    tile = user_client.get(reverse("predictions:card", args=[prediction.id])).content.decode()
    page = user_client.get(reverse("predictions:detail", args=[prediction.id])).content.decode()

    # The tile: the picture, the label and its confidence; no chart, no timings.
    assert "tabby cat" in tile
    assert "80 %" in tile
    assert 'class="bar-row"' not in tile
    assert "40 ms" not in tile
    # The prediction's page: the chart (an 80 % bar: a class, the CSP allows no style attribute), the timings.
    assert page.count('class="bar-row"') == 2
    assert "bar-fill w-80" in page
    assert "40 ms" in page


def test_history_lists_own_predictions_with_filters_and_csv(user_client: Client, user: User, other_user: User) -> None:
    PredictionFactory.create(user=user, label="tabby cat", status=PredictionStatus.PENDING)
    PredictionFactory.create(user=user, label="espresso", status=PredictionStatus.PENDING)
    PredictionFactory.create(user=other_user, label="tabby cat", original_filename="secret.jpg")

    page = user_client.get(reverse("predictions:history"))
    filtered = user_client.get(reverse("predictions:history"), {"label": "espresso"})
    exported = user_client.get(reverse("predictions:history-csv"), {"label": "tabby"})

    assert page.context["page"].paginator.count == 2
    assert b"secret.jpg" not in page.content
    assert [p.label for p in filtered.context["page"].object_list] == ["espresso"]
    rows = list(csv.reader(io.StringIO(exported.getvalue().decode())))
    assert rows[0][0] == "id"
    assert len(rows) == 2
    assert rows[1][5] == "tabby cat"


def test_history_is_paginated_newest_first(user_client: Client, user: User) -> None:
    for _ in range(25):
        PredictionFactory.create(user=user)

    first = user_client.get(reverse("predictions:history"))
    second = user_client.get(reverse("predictions:history"), {"page": 2})

    assert len(first.context["page"].object_list) == 24  # whole rows of tiles
    assert len(second.context["page"].object_list) == 1
    newest = Prediction.objects.order_by("-created_at").first()
    assert first.context["page"].object_list[0] == newest


def test_other_users_cannot_see_poll_delete_or_fetch_the_image(client: Client, user: User, other_user: User) -> None:
    prediction = PredictionFactory.create(user=user)
    client.force_login(other_user)

    for name in ["predictions:detail", "predictions:card", "predictions:image"]:
        assert client.get(reverse(name, args=[prediction.id])).status_code == 404
    assert client.post(reverse("predictions:delete", args=[prediction.id])).status_code == 404
    assert client.get(reverse("predictions:batch"), {"id": str(prediction.id)}).status_code == 404
    assert Prediction.objects.filter(id=prediction.id).exists()


def test_owner_gets_the_image_and_a_thumbnail(user_client: Client, user: User) -> None:
    prediction = PredictionFactory.create(user=user)

    full = user_client.get(reverse("predictions:image", args=[prediction.id]))
    thumb = user_client.get(reverse("predictions:image", args=[prediction.id]), {"size": "thumb"})

    assert full["Content-Type"] == "image/jpeg"
    assert full.getvalue() == prediction.image.open("rb").read()
    assert thumb.status_code == 200
    assert thumb.getvalue()[:2] == b"\xff\xd8"


def test_media_is_not_served_publicly(client: Client, user: User) -> None:
    prediction = PredictionFactory.create(user=user)
    assert client.get(f"/media/{prediction.image.name}").status_code == 404
    assert client.get(reverse("predictions:image", args=[prediction.id])).status_code == 302


def test_delete_removes_the_prediction_and_its_file(
    user_client: Client, user: User, django_capture_on_commit_callbacks: DjangoCaptureOnCommitCallbacks
) -> None:
    prediction = PredictionFactory.create(user=user)
    path = prediction.image.path

    with django_capture_on_commit_callbacks(execute=True):
        response = user_client.post(reverse("predictions:delete", args=[prediction.id]))

    assert response.status_code == 302
    assert not Prediction.objects.exists()
    import os

    assert not os.path.exists(path)


def test_admin_lists_predictions_read_only(client: Client, user: User, django_user_model: type[User]) -> None:
    admin = django_user_model.objects.create_superuser("boss", password="x-long-password-1")
    prediction = PredictionFactory.create(user=user, label="tabby cat")
    client.force_login(admin)

    listing = client.get(reverse("admin:predictions_prediction_changelist"))
    change = client.get(reverse("admin:predictions_prediction_change", args=[prediction.id]))
    image = client.get(reverse("admin-prediction-image", args=[prediction.id]))

    assert listing.status_code == 200
    assert b"tabby cat" in listing.content
    assert change.status_code == 200
    assert b'name="_save"' not in change.content
    assert image.status_code == 200


def test_a_bad_file_among_good_ones_is_reported_and_the_good_ones_go_through(user_client: Client, user: User) -> None:
    files = [
        SimpleUploadedFile("cup.png", photo_bytes("coffee", "PNG")),
        SimpleUploadedFile("notes.txt", b"just text"),
    ]

    response = user_client.post(reverse("predictions:upload"), {"images": files, "top_k": 5}, follow=True)

    assert len(response.context["predictions"]) == 1
    assert b"notes.txt" in response.content
    assert b"not an image" in response.content
    assert Prediction.objects.filter(user=user).count() == 1


def test_missing_image_file_is_a_404_not_a_500(user_client: Client, user: User) -> None:
    import os

    prediction = PredictionFactory.create(user=user)
    os.unlink(prediction.image.path)

    assert user_client.get(reverse("predictions:image", args=[prediction.id])).status_code == 404
    assert user_client.get(reverse("predictions:image", args=[prediction.id]), {"size": "thumb"}).status_code == 404


def test_csv_export_neutralises_formulas_in_filenames(user_client: Client, user: User) -> None:
    PredictionFactory.create(user=user, original_filename="=HYPERLINK(1).jpg")

    exported = user_client.get(reverse("predictions:history-csv")).getvalue().decode()

    assert "'=HYPERLINK(1).jpg" in exported


def test_too_many_files_at_once_is_a_form_error_and_nothing_is_stored(user_client: Client, settings: Settings) -> None:
    settings.MAX_FILES_PER_REQUEST = 2
    files = [SimpleUploadedFile(f"{i}.png", photo_bytes("coffee", "PNG")) for i in range(3)]

    response = user_client.post(reverse("predictions:upload"), {"images": files, "top_k": 5})

    assert response.status_code == 400
    assert b"at most 2 images" in response.content
    assert Prediction.objects.count() == 0


def test_a_cached_result_says_so_on_its_card_and_in_history(user_client: Client, user: User) -> None:
    from django.utils import timezone

    prediction = PredictionFactory.create(
        user=user, status="succeeded", label="tabby", class_id="n02123045", confidence=0.8, cached=True,
        top_predictions=[{"label": "tabby", "class_id": "n02123045", "score": 0.8}], total_ms=4.0,
        queue_ms=0, preprocess_ms=0, inference_ms=0, completed_at=timezone.now(),
    )  # fmt: skip

    card = user_client.get(reverse("predictions:card", args=[prediction.id])).content.decode()
    page = user_client.get(reverse("predictions:detail", args=[prediction.id])).content.decode()
    history = user_client.get(reverse("predictions:history"), {"view": "list"}).content.decode()

    assert ">cached<" in card
    assert "the stored result was reused" in page
    assert "Inference" not in page  # the model did not run: no inference time to show
    assert ">cached<" in history
