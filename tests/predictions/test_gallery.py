"""The history as a gallery, without JavaScript: tiles, filters kept in the URL, the list
view, and the multi-select (delete, mark correct, export) acting only on one's own."""

from __future__ import annotations

import csv
import io

from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from predictions.models import Correction, Prediction
from predictions.reviews import services as review_services
from tests.factories import ModelVersionFactory, PredictionFactory, SucceededPredictionFactory

HISTORY = reverse("predictions:history")
SELECTED = reverse("predictions:history-selected")


def _tiles(page: str) -> int:
    return page.count('class="card"')


def test_history_is_a_grid_of_tiles_with_label_confidence_and_a_list_view(user_client: Client, user: User) -> None:
    SucceededPredictionFactory.create(user=user, original_filename="garden-cat.jpg", confidence=0.61)
    PredictionFactory.create(user=user, original_filename="still-waiting.jpg")

    grid = user_client.get(HISTORY).content.decode()
    listed = user_client.get(HISTORY, {"view": "list"}).content.decode()

    assert _tiles(grid) == 2
    assert '<strong class="label">tiger cat</strong> <span class="confidence">61 %</span>' in grid
    assert "Pending…" in grid
    assert 'class="history' not in grid
    assert _tiles(listed) == 0
    assert listed.count("<tr id=") == 2
    # The toggle says which view is shown, and links to the other.
    assert '<a href="?" aria-current="page">Grid</a>' in grid
    assert '<a href="?view=list" aria-current="page">List</a>' in listed


def test_filters_live_in_the_url_and_travel_with_the_view_toggle_and_the_pages(user_client: Client, user: User) -> None:
    for n in range(30):
        SucceededPredictionFactory.create(user=user, original_filename=f"cat-{n}.jpg")
    SucceededPredictionFactory.create(user=user, original_filename="dog.jpg")

    page = user_client.get(HISTORY, {"filename": "cat-", "status": "succeeded"}).content.decode()

    assert _tiles(page) == 24
    assert "30 predictions match your filters" in page
    assert 'href="?filename=cat-&amp;status=succeeded&amp;view=list"' in page
    assert 'href="?filename=cat-&amp;status=succeeded&amp;page=2"' in page
    # A tile's link brings the filters back on its page's "Back to history".
    assert "?back=filename%3Dcat-%26status%3Dsucceeded" in page


def test_the_label_search_matches_corrected_labels_too(user_client: Client, user: User) -> None:
    model_version = ModelVersionFactory.create()
    wrong = SucceededPredictionFactory.create(user=user, label="tiger cat", model_version=model_version)
    review_services.correction_set(prediction=wrong, user=user, label="Chihuahua")
    SucceededPredictionFactory.create(user=user, label="tiger cat", model_version=model_version)

    found = user_client.get(HISTORY, {"label": "chihua"}).content.decode()
    by_model = user_client.get(HISTORY, {"label": "tiger"}).content.decode()

    assert _tiles(found) == 1
    assert f'id="card-{wrong.id}"' in found
    assert _tiles(by_model) == 2  # the model's label still matches the corrected one


def test_filters_by_sureness_and_model_version(user_client: Client, user: User) -> None:
    old = ModelVersionFactory.create(version="1", is_active=False, status="retired")
    new = ModelVersionFactory.create(version="2")
    unsure = SucceededPredictionFactory.create(user=user, uncertain=True, model_version=new)
    sure = SucceededPredictionFactory.create(user=user, uncertain=False, model_version=old)

    only_unsure = user_client.get(HISTORY, {"sure": "unsure"}).content.decode()
    only_v1 = user_client.get(HISTORY, {"model_version": "1"}).content.decode()
    refused = user_client.get(HISTORY, {"model_version": "9"})

    assert f'id="card-{unsure.id}"' in only_unsure
    assert f'id="card-{sure.id}"' not in only_unsure
    assert f'id="card-{sure.id}"' in only_v1
    assert f'id="card-{unsure.id}"' not in only_v1
    assert '<option value="2">v2</option>' in only_v1  # the versions that made the user's predictions
    assert "Model version: Select a valid choice" in refused.content.decode()
    assert _tiles(refused.content.decode()) == 0


def test_deleting_the_selected_deletes_only_ones_own_and_returns_to_the_same_filters(
    user_client: Client, user: User, other_user: User
) -> None:
    mine = [SucceededPredictionFactory.create(user=user) for _ in range(3)]
    theirs = SucceededPredictionFactory.create(user=other_user)

    response = user_client.post(
        SELECTED,
        {"action": "delete", "id": [mine[0].id, mine[1].id, theirs.id, "not-an-id"], "back": "label=cat&view=list"},
    )

    assert response.status_code == 302
    assert response["Location"] == f"{HISTORY}?label=cat&view=list#selection"  # focus back on the bar
    assert set(Prediction.objects.values_list("id", flat=True)) == {mine[2].id, theirs.id}
    page = user_client.get(response["Location"]).content.decode()
    assert "Deleted 2 predictions." in page


def test_marking_the_selected_correct_skips_the_ones_the_model_was_not_sure_about(
    user_client: Client, user: User
) -> None:
    sure = SucceededPredictionFactory.create(user=user, uncertain=False)
    unsure = SucceededPredictionFactory.create(user=user, uncertain=True)
    waiting = PredictionFactory.create(user=user)

    response = user_client.post(SELECTED, {"action": "confirm", "id": [sure.id, unsure.id, waiting.id]}, follow=True)

    assert list(Correction.objects.values_list("prediction_id", "confirmed")) == [(sure.id, True)]
    assert "Marked 1 prediction as correct. Skipped 2" in response.content.decode()


def test_exporting_the_selected_gives_their_rows_only(user_client: Client, user: User) -> None:
    chosen = SucceededPredictionFactory.create(user=user, original_filename="chosen.jpg")
    SucceededPredictionFactory.create(user=user, original_filename="left-out.jpg")

    response = user_client.post(SELECTED, {"action": "export", "id": [chosen.id]})

    assert response["Content-Type"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(b"".join(response.streaming_content).decode())))  # type: ignore[attr-defined]
    assert [row["filename"] for row in rows] == ["chosen.jpg"]


def test_nothing_selected_says_so_and_changes_nothing(user_client: Client, user: User) -> None:
    SucceededPredictionFactory.create(user=user)

    response = user_client.post(SELECTED, {"action": "delete"}, follow=True)

    assert "Nothing was selected" in response.content.decode()
    assert Prediction.objects.count() == 1
    assert user_client.get(SELECTED).status_code == 405


def test_flash_messages_are_a_list_inside_a_live_region(user_client: Client, user: User) -> None:
    prediction = SucceededPredictionFactory.create(user=user)

    page = user_client.post(
        reverse("predictions:delete", args=[prediction.id]), {"back": ""}, follow=True
    ).content.decode()

    # role="status" on the <ul> itself would strip its items of their list (axe: listitem).
    assert '<div class="messages" role="status"><ul><li class="success">Deleted' in page
    assert '<ul class="messages" role="status">' not in page


def test_the_upload_page_speaks_plainly(user_client: Client) -> None:
    page = user_client.get(reverse("predictions:upload")).content.decode()

    assert "Top-k" not in page
    assert "Guesses to show" in page
    assert page.count('type="file"') == 1
