"""Reads of the model registry: the active version, the version a user's uploads run with (A/B), the versions in use."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet

from predictions.announced import AnnouncedValue
from predictions.exceptions import ModelUnavailableError
from predictions.models import (
    ModelActivation,
    ModelActivationKind,
    ModelVersion,
    ModelVersionStatus,
    Prediction,
    PredictionStatus,
)

from ..explanations.models import Explanation, ExplanationStatus


def model_version_active() -> ModelVersion | None:
    return ModelVersion.objects.filter(is_active=True).first()


def model_version_active_get() -> ModelVersion:
    """The active model version; ``ModelUnavailableError`` when none is (the registry is
    filled by ``manage.py sync_models``, which ``make run`` and the compose ``migrate``
    service run; a read never registers anything)."""
    active = model_version_active()
    if active is None:
        raise ModelUnavailableError(
            "No model version is active: register the exported models with `python manage.py sync_models`."
        )
    return active


def traffic_bucket(*, user_id: int, model_version_id: int) -> int:
    """The user's bucket (0-99) for one candidate: a stable hash of both ids, the same in
    every process and after restarts (Python's ``hash()`` is salted per process)."""
    digest = hashlib.sha256(f"{user_id}:{model_version_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def _model_versions_in_play() -> tuple[ModelVersion, ...]:
    return tuple(
        ModelVersion.objects.filter(Q(is_active=True) | Q(status=ModelVersionStatus.CANDIDATE, traffic_percent__gt=0))
    )


# What a submission chooses from (the active version and the A/B candidate with a share),
# kept in the process until a switch (``announced``): ``model_versions_changed``.
_in_play = AnnouncedValue(topic="registry", load=_model_versions_in_play)


def model_versions_changed(**_: object) -> None:
    """A version was saved, deleted or updated in bulk (the save/delete signals and the
    services that ``update()`` call this): submissions choose from the database again,
    in this process at once and in the others once it commits (``announced``)."""
    _in_play.changed()


def model_versions_forget() -> None:
    """Drop what this process keeps of the registry (a test's database is rolled back)."""
    _in_play.forget()


def model_version_for_user(*, user: User) -> ModelVersion | None:
    """The version a new prediction of ``user`` runs with (A/B test): the candidate with
    a share of traffic when the user's ``traffic_bucket`` for it is below its
    ``traffic_percent``, else the active version (``None`` before any is registered).

    Sticky: the same user gets the same answer on every submission while the share is
    unchanged; raising the share only moves users from the active side to the candidate.
    No query while the versions are kept in the process (``_in_play``); one after a switch.
    The version returned is shared by the process's threads: read-only.
    """
    active: ModelVersion | None = None
    for version in _in_play.get():
        if version.is_active:
            active = version
        elif traffic_bucket(user_id=user.pk, model_version_id=version.pk) < version.traffic_percent:
            return version
    return active


def model_version_in_use() -> QuerySet[ModelVersion]:
    """The versions a worker must keep loaded, the active one first: the active version,
    the A/B candidate with a share of traffic, and any version a waiting (pending or
    running) prediction was given at submission or by a reprocess job, and any version a
    pending explanation is computed with. One query."""
    waiting_on = Prediction.objects.filter(
        status__in=[PredictionStatus.PENDING, PredictionStatus.RUNNING], assigned_version__isnull=False
    ).values("assigned_version_id")
    explaining = Explanation.objects.filter(status=ExplanationStatus.PENDING, model_version__isnull=False).values(
        "model_version_id"
    )
    return (
        ModelVersion.objects.filter(
            Q(is_active=True)
            | Q(status=ModelVersionStatus.CANDIDATE, traffic_percent__gt=0)
            | Q(pk__in=waiting_on)
            | Q(pk__in=explaining)
        )
        .exclude(status=ModelVersionStatus.RETIRED)  # its waiting rows run with the active one
        .order_by("-is_active", "-traffic_percent", "name", "version")
    )


def model_version_list() -> QuerySet[ModelVersion]:
    return ModelVersion.objects.select_related("parent").order_by("name", "version")


def model_version_get(*, name: str, version: str) -> ModelVersion:
    """One registered version; raises ``ModelVersion.DoesNotExist``."""
    return ModelVersion.objects.get(name=name, version=version)


def model_version_rollback_target(*, active: ModelVersion) -> ModelVersion | None:
    """The version that was active before ``active`` was last activated (rollbacks
    themselves skipped, so rolling back again walks further back); ``None`` when it was
    the first."""
    activation = (
        ModelActivation.objects.filter(model_version=active)
        .exclude(kind=ModelActivationKind.ROLLBACK)
        .select_related("previous")
        .first()
    )
    return activation.previous if activation is not None else None


def model_activation_list(*, limit: int = 100) -> QuerySet[ModelActivation]:
    """The latest switches of the active model version, newest first."""
    return ModelActivation.objects.select_related("model_version", "previous", "activated_by")[:limit]


@dataclass(frozen=True)
class ModelClass:
    """One output class of a model version (its ``labels.json`` entry)."""

    class_id: str
    label: str


def model_class_list(*, model_version: ModelVersion | None) -> list[ModelClass]:
    """The version's classes in output order (none without a version)."""
    entries = model_version.classes if model_version is not None else []
    return [ModelClass(class_id=str(entry.get("class_id", "")), label=str(entry.get("label", ""))) for entry in entries]


def model_class_find(*, model_version: ModelVersion | None, label: str) -> ModelClass | None:
    """The version's class whose label is ``label`` ignoring case; ``None`` when it has none."""
    wanted = label.casefold()
    return next(
        (item for item in model_class_list(model_version=model_version) if item.label.casefold() == wanted), None
    )


def model_class_closest(*, model_version: ModelVersion | None, text: str, limit: int = 5) -> list[str]:
    """Up to ``limit`` labels of the version's classes closest to ``text``: those that
    contain it ("tabby" -> "tabby cat", "mau" -> "Egyptian Mau"), shortest first, else
    the most similar spellings ("siamse cat" -> "Siamese cat")."""
    labels = [item.label for item in model_class_list(model_version=model_version)]
    wanted = text.casefold().strip()
    if not wanted:
        return []
    containing = sorted((label for label in labels if wanted in label.casefold()), key=len)
    by_folded = {label.casefold(): label for label in labels}
    similar = [by_folded[match] for match in difflib.get_close_matches(wanted, list(by_folded), n=limit, cutoff=0.6)]
    return (containing or similar)[:limit]
