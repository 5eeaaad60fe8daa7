"""factory_boy factories for users and predictions (rows, not model runs)."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime

import factory
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.utils import timezone
from PIL import Image

from predictions.models import Correction, ModelVersion, ModelVersionStatus, Prediction


def jpeg_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "JPEG")
    return buffer.getvalue()


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation  # type: ignore[untyped-decorator]  # factory_boy leaves it unannotated
    def save_password(self: User, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            self.save()


class OperatorFactory(UserFactory):
    """A staff account allowed to read every user's predictions (``predictions.access``):
    the admin log, the all-users stats, /metrics."""

    is_staff = True

    @factory.post_generation  # type: ignore[untyped-decorator]  # factory_boy leaves it unannotated
    def view_all_predictions(self: User, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            self.user_permissions.add(
                Permission.objects.get(content_type__app_label="predictions", codename="view_prediction")
            )


class PredictionFactory(factory.django.DjangoModelFactory[Prediction]):
    """A pending prediction with a real small JPEG on disk."""

    class Meta:
        model = Prediction

    user = factory.SubFactory(UserFactory)
    created_at = factory.LazyFunction(timezone.now)
    original_filename = factory.Sequence(lambda n: f"photo{n}.jpg")
    image_format = "JPEG"
    width = 64
    height = 48
    image = factory.LazyAttribute(lambda o: ContentFile(jpeg_bytes(), name="upload.jpg"))
    size_bytes = factory.LazyAttribute(lambda o: len(jpeg_bytes()))
    sha256 = factory.LazyAttribute(lambda o: hashlib.sha256(jpeg_bytes()).hexdigest())


class SucceededPredictionFactory(PredictionFactory):
    """A prediction the worker has classified: label, confidence, a two-entry top-k
    (the label, then "tabby cat") and timings, as the worker stores them."""

    status = "succeeded"
    label = "tiger cat"
    class_id = "n02123159"
    confidence = 0.61
    completed_at = factory.LazyFunction(timezone.now)
    total_ms = 40.0
    top_predictions = factory.LazyAttribute(
        lambda o: [
            {"label": o.label, "class_id": o.class_id, "score": 0.61},
            {"label": "tabby cat", "class_id": "n02123045", "score": 0.3},
        ]
    )


class ModelVersionFactory(factory.django.DjangoModelFactory[ModelVersion]):
    """A registered model version (no files: the path does not exist), by default the
    active "lite" v3 with three ImageNet cat/dog classes and a test-photo card."""

    class Meta:
        model = ModelVersion

    name = "lite"
    version = "3"
    path = factory.LazyAttribute(lambda o: f"/nonexistent/{o.name}/{o.version}")
    classes = factory.LazyFunction(
        lambda: [
            {"class_id": "n02123045", "label": "tabby cat"},
            {"class_id": "n02123159", "label": "tiger cat"},
            {"class_id": "n02085620", "label": "Chihuahua"},
        ]
    )
    metrics = factory.LazyFunction(lambda: {"test_photos": {"count": 5, "top1_accuracy": 0.8}, "num_classes": 3})
    exported_at = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
    is_active = True
    status = ModelVersionStatus.ACTIVE


class CorrectionFactory(factory.django.DjangoModelFactory[Correction]):
    """An owner's review of a succeeded prediction (a row, as the review services store
    it): by default a correction to a label the model does not have, marked a new class."""

    class Meta:
        model = Correction

    prediction = factory.SubFactory(SucceededPredictionFactory)
    confirmed = False
    label = "snow leopard"
    class_id = ""
    new_class = factory.LazyAttribute(lambda o: not o.confirmed and not o.class_id)
    predicted_label = factory.SelfAttribute("prediction.label")
    model_version = factory.SelfAttribute("prediction.model_version")
    corrected_by = factory.SelfAttribute("prediction.user")
    created_at = factory.LazyFunction(timezone.now)
    updated_at = factory.LazyFunction(timezone.now)
