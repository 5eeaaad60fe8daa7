"""The Python client a user generates from the schema (openapi-python-client, `make
clients` into var/clients/python) does the whole journey against the live stack: submit
one and many, wait and poll, list with filters, the image, a review, an explanation
requested and downloaded, delete, and the errors, each parsed into its documented type.
"""

from __future__ import annotations

import io
import sys
import time
from typing import Any

import pytest
from PIL import Image

from tests.conftest import PHOTOS
from tests.contract.conftest import GENERATED_CLIENTS, ApiStack, damaged_png, photo_jpeg

pytestmark = [pytest.mark.contract, pytest.mark.slow]

PACKAGE = GENERATED_CLIENTS / "python" / "imagerec_client"


@pytest.fixture(scope="module")
def client(api_stack: ApiStack) -> Any:
    """An ``AuthenticatedClient`` of the generated package, signed in with the stack's token."""
    if not PACKAGE.is_dir():
        pytest.fail(f"no generated client in {PACKAGE}: run `make clients`")
    sys.path.insert(0, str(PACKAGE.parent))
    import httpx
    from imagerec_client import AuthenticatedClient

    return AuthenticatedClient(base_url=api_stack.url, token=api_stack.token, prefix="Token", timeout=httpx.Timeout(90))


def _upload(name: str, content: bytes) -> Any:
    from imagerec_client.types import File

    return File(payload=io.BytesIO(content), file_name=name, mime_type="image/jpeg")


def _final(client: Any, prediction: Any) -> Any:
    """The prediction once final: long-polls while the (shared) worker is busy."""
    from imagerec_client.api.predictions import predictions_retrieve
    from imagerec_client.models import PredictionOutputStatusEnum

    for _ in range(6):
        if prediction.status in (PredictionOutputStatusEnum.SUCCEEDED, PredictionOutputStatusEnum.FAILED):
            return prediction
        prediction = predictions_retrieve.sync(prediction.id, client=client, wait=30)
    raise AssertionError(f"{prediction.id} still {prediction.status}")


def _submit_and_wait(client: Any, name: str, content: bytes) -> Any:
    """Submit one image and wait for it in the same request (201 once final, else 202)."""
    from imagerec_client.api.predictions import predictions_create
    from imagerec_client.models import PredictionSubmitRequest

    answer = predictions_create.sync_detailed(
        client=client, body=PredictionSubmitRequest(image=_upload(name, content), top_k=5), wait=30
    )
    assert answer.status_code in (201, 202), answer.content
    assert answer.headers["Location"] == answer.parsed.url
    return _final(client, answer.parsed)


def test_one_image_from_upload_to_label_image_review_explanation_and_delete(client: Any) -> None:
    from imagerec_client.api.predictions import (
        predictions_confirmation_create,
        predictions_confirmation_destroy,
        predictions_correction_create,
        predictions_create,
        predictions_destroy,
        predictions_explanation_create,
        predictions_explanation_retrieve,
        predictions_image_retrieve,
        predictions_list,
        predictions_retrieve,
    )
    from imagerec_client.models import (
        CorrectionLabelRequest,
        Error,
        ExplanationPending,
        PredictionOutputStatusEnum,
        PredictionsImageRetrieveSize,
        PredictionsListStatus,
        PredictionSubmitRequest,
    )
    from imagerec_client.types import File

    # Submit without waiting: 202, pending (or already succeeded: the same bytes were
    # classified before, `cached`), its URL in Location; then a long-poll.
    submitted = predictions_create.sync_detailed(
        client=client, body=PredictionSubmitRequest(image=_upload("cat.jpg", photo_jpeg("chelsea")))
    )
    assert submitted.status_code == 202
    assert submitted.parsed.status == PredictionOutputStatusEnum.PENDING or submitted.parsed.cached
    assert submitted.headers["Location"] == submitted.parsed.url
    prediction = _final(client, predictions_retrieve.sync(submitted.parsed.id, client=client, wait=30))
    assert prediction.status == PredictionOutputStatusEnum.SUCCEEDED
    assert {entry.class_id for entry in prediction.predictions[:3]} & set(PHOTOS["chelsea"].expected)
    assert prediction.image.filename == "cat.jpg"
    assert prediction.timings_ms.inference > 0

    # The list, filtered: this one among the succeeded ones with its label, one per page.
    page = predictions_list.sync(
        client=client, status=PredictionsListStatus.SUCCEEDED, label=prediction.label, page_size=1
    )
    assert page.count >= 1
    assert len(page.results) == 1
    assert page.results[0].label == prediction.label
    assert predictions_list.sync(client=client, status=PredictionsListStatus.FAILED, label=prediction.label).count == 0

    # The image as uploaded and its thumbnail, as bytes.
    image = predictions_image_retrieve.sync(prediction.id, client=client)
    thumbnail = predictions_image_retrieve.sync(prediction.id, client=client, size=PredictionsImageRetrieveSize.THUMB)
    assert isinstance(image, File)
    assert isinstance(thumbnail, File)
    with Image.open(image.payload) as original, Image.open(thumbnail.payload) as small:
        assert original.size == (prediction.image.width, prediction.image.height)
        assert max(small.size) <= 160
        assert small.format == "JPEG"

    # A review: a correction (the runner-up class), replaced by a confirmation, withdrawn (twice: then 404).
    runner_up = prediction.predictions[1]
    corrected = predictions_correction_create.sync(
        prediction.id, client=client, body=CorrectionLabelRequest(runner_up.label.upper())
    )
    assert corrected.confirmed is False
    assert (corrected.label, corrected.class_id) == (
        runner_up.label,
        runner_up.class_id,
    )
    confirmed = predictions_confirmation_create.sync(prediction.id, client=client)
    assert confirmed.confirmed is True
    assert confirmed.label == prediction.label
    assert predictions_confirmation_destroy.sync_detailed(prediction.id, client=client).status_code == 204
    assert predictions_confirmation_destroy.sync_detailed(prediction.id, client=client).status_code == 404

    # An explanation of the second class: requested with POST, read with GET until it is a PNG.
    second = prediction.predictions[1].class_id
    requested = predictions_explanation_create.sync_detailed(prediction.id, client=client, class_id=second)
    assert requested.status_code in (200, 202)
    assert requested.parsed.class_id == second
    overlay = predictions_explanation_retrieve.sync(prediction.id, client=client, class_id=second)
    for _ in range(240):
        if not isinstance(overlay, ExplanationPending):
            break
        time.sleep(0.5)
        overlay = predictions_explanation_retrieve.sync(prediction.id, client=client, class_id=second)
    assert isinstance(overlay, File)
    with Image.open(overlay.payload) as png:
        assert png.format == "PNG"
        assert max(png.size) == max(prediction.image.width, prediction.image.height)
    never_requested = predictions_explanation_retrieve.sync(prediction.id, client=client, class_id="n00000000")
    assert isinstance(never_requested, Error)
    assert never_requested.error.code == "not_found"

    # Delete: 204, then it is gone.
    assert predictions_destroy.sync_detailed(prediction.id, client=client).status_code == 204
    gone = predictions_retrieve.sync_detailed(prediction.id, client=client)
    assert gone.status_code == 404
    assert gone.parsed.error.code == "not_found"


def test_several_images_in_one_batch_each_get_a_prediction_or_an_error(client: Any) -> None:
    from imagerec_client.api.predictions import predictions_batch_create
    from imagerec_client.models import PredictionBatchSubmitRequest, PredictionOutputStatusEnum

    files = [
        _upload("coffee.jpg", photo_jpeg("coffee")),
        _upload("notes.jpg", b"not an image at all"),
        _upload("rocket.jpg", photo_jpeg("rocket")),
    ]

    answer = predictions_batch_create.sync_detailed(client=client, body=PredictionBatchSubmitRequest(image=files))

    assert answer.status_code == 202, answer.content
    results = answer.parsed.results
    assert [entry.filename for entry in results] == ["coffee.jpg", "notes.jpg", "rocket.jpg"]
    assert results[1].prediction is None
    assert results[1].error.code == "unsupported_media_type"
    for entry, photo in ((results[0], "coffee"), (results[2], "rocket")):
        assert entry.error is None
        final = _final(client, entry.prediction)
        assert final.status == PredictionOutputStatusEnum.SUCCEEDED
        assert {p.class_id for p in final.predictions[:3]} & set(PHOTOS[photo].expected)


def test_every_error_comes_parsed_as_the_one_error_shape(client: Any, api_stack: ApiStack) -> None:
    from imagerec_client import AuthenticatedClient
    from imagerec_client.api.predictions import predictions_create, predictions_list, predictions_retrieve
    from imagerec_client.api.predictions import predictions_retry_create as retry
    from imagerec_client.models import Error, PredictionOutputStatusEnum, PredictionSubmitRequest

    unknown = predictions_retrieve.sync_detailed("00000000-0000-4000-8000-000000000000", client=client)
    too_many = predictions_create.sync_detailed(
        client=client, body=PredictionSubmitRequest(image=_upload("cat.jpg", photo_jpeg("chelsea")), top_k=999)
    )
    not_an_image = predictions_create.sync_detailed(
        client=client, body=PredictionSubmitRequest(image=_upload("notes.jpg", b"plain text"))
    )
    stranger = AuthenticatedClient(base_url=api_stack.url, token="not-a-token", prefix="Token")
    anonymous = predictions_list.sync_detailed(client=stranger)
    succeeded = _submit_and_wait(client, "coffee.jpg", photo_jpeg("coffee"))
    retry_succeeded = retry.sync_detailed(succeeded.id, client=client)

    for answer, status, code in (
        (unknown, 404, "not_found"),
        (too_many, 400, "max_value"),
        (not_an_image, 415, "unsupported_media_type"),
        (anonymous, 401, "authentication_failed"),
        (retry_succeeded, 409, "conflict"),
    ):
        assert answer.status_code == status, answer.content
        assert isinstance(answer.parsed, Error), answer.content
        assert answer.parsed.error.code == code
        assert answer.parsed.error.message

    # A failed prediction (a PNG with damaged pixels) is retried: 202, pending again.
    failed = _submit_and_wait(client, "damaged.png", damaged_png())
    assert failed.status == PredictionOutputStatusEnum.FAILED
    assert failed.error
    retried = retry.sync_detailed(failed.id, client=client)
    assert retried.status_code == 202
    assert retried.parsed.status == PredictionOutputStatusEnum.PENDING
