"""The model registry: register exported folders, activate, roll back, retire, and give a
candidate a share of traffic (A/B).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from ml.export import ExportedModel, ModelLoadError, export_read, version_key
from predictions.exceptions import (
    ApplicationError,
    ConflictError,
    InvalidModelError,
    ModelUnavailableError,
)
from predictions.models import (
    ModelActivation,
    ModelActivationKind,
    ModelVersion,
    ModelVersionStatus,
)
from predictions.registry import distribution
from predictions.registry import selectors as registry_selectors

logger = logging.getLogger(__name__)


def _model_metrics(metadata: dict[str, Any]) -> dict[str, Any]:
    """The model card's figures: ``metrics`` when the export writes them, else what the
    builders record (test-photo accuracy, fine-tuning's final metrics, equivalence)."""
    if isinstance(metadata.get("metrics"), dict):
        return dict(metadata["metrics"])
    metrics: dict[str, Any] = {}
    photos = metadata.get("test_photos")
    if isinstance(photos, dict):
        metrics["test_photos"] = {k: photos[k] for k in ("count", "top1_accuracy", "top5_accuracy") if k in photos}
    training = metadata.get("training")
    if isinstance(training, dict) and isinstance(training.get("final_metrics"), dict):
        metrics["training"] = training["final_metrics"]
    test = metadata.get("test_metrics")
    if isinstance(test, dict):  # training.finetune: the held-out test split
        metrics["test"] = _card_figures(test)
    evaluation = metadata.get("evaluation")
    if isinstance(evaluation, dict):  # training.evaluate --data: the latest report
        metrics["evaluation"] = _card_figures(evaluation) | {
            k: evaluation[k] for k in ("split", "created") if isinstance(evaluation.get(k), str)
        }
    equivalence = metadata.get("equivalence")
    if isinstance(equivalence, dict) and "checked" in equivalence:
        metrics["equivalence_checked"] = bool(equivalence["checked"])
    for key in ("parameters", "num_classes"):
        if isinstance(metadata.get(key), int):
            metrics[key] = metadata[key]
    return metrics


_CARD_FIGURES = ("count", "top1", "top5", "ece", "micro_f1", "macro_f1", "exact_match", "mean_average_precision")


def _card_figures(report: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers of a test or evaluation report (no per-class rows, confusion
    matrix or reliability bins): what the registry and the stats page show."""
    figures = {k: report[k] for k in _CARD_FIGURES if isinstance(report.get(k), int | float)}
    for average in ("macro", "weighted"):
        if isinstance(report.get(average), dict) and isinstance(report[average].get("f1"), int | float):
            figures[f"{average}_f1"] = report[average]["f1"]
    return figures


def _model_parent(metadata: dict[str, Any]) -> ModelVersion | None:
    """The registered version this one was derived from: ``parent_model`` (what
    ``training.finetune`` writes), ``parent`` or ``base_model`` as ``{"name", "version"}``;
    ``None`` when absent or not registered."""
    parent = metadata.get("parent_model") or metadata.get("parent") or metadata.get("base_model")
    if not isinstance(parent, dict) or "name" not in parent or "version" not in parent:
        return None
    return ModelVersion.objects.filter(name=str(parent["name"]), version=str(parent["version"])).first()


def _model_exported_at(metadata: dict[str, Any]) -> datetime | None:
    try:
        created = datetime.fromisoformat(str(metadata["created"]))
    except (KeyError, ValueError):
        return None
    return created if timezone.is_aware(created) else created.replace(tzinfo=UTC)


def _model_version_store(*, exported: ExportedModel, status: str | None = None) -> ModelVersion:
    """Create or refresh the registry row of an exported folder (files stay where they
    are); with ``MODEL_DISTRIBUTION`` they are published to the bucket too
    (``_model_version_publish``)."""
    metadata = dict(exported.metadata)
    published = (
        ModelVersion.objects.filter(name=exported.name, version=exported.version)
        .values_list("metadata", flat=True)
        .first()
    )
    if published and published.get("distribution"):
        metadata["distribution"] = published["distribution"]  # kept until published again
    defaults: dict[str, Any] = {
        "path": str(exported.path),
        "metadata": metadata,
        "classes": [{"class_id": entry["class_id"], "label": entry["label"]} for entry in exported.labels],
        "metrics": _model_metrics(exported.metadata),
        "parent": _model_parent(exported.metadata),
        "exported_at": _model_exported_at(exported.metadata),
    }
    model_version, created = ModelVersion.objects.update_or_create(
        name=exported.name, version=exported.version, defaults=defaults
    )
    if status is not None and not model_version.is_active and model_version.status != status:
        model_version.status = status
        model_version.traffic_percent = 0  # a share of traffic belongs to a candidate only
        model_version.full_clean()
        model_version.save(update_fields=["status", "traffic_percent"])
    elif created:
        model_version.full_clean()
    if settings.MODEL_DISTRIBUTION:
        _model_version_publish(model_version=model_version, model_dir=exported.path)
    return model_version


def _model_version_publish(*, model_version: ModelVersion, model_dir: Path) -> None:
    """Publish the version's files; a folder without weights (the web image keeps only
    the model cards) keeps what was published before, if anything."""
    try:
        distribution.model_version_publish(model_version=model_version, model_dir=model_dir)
    except InvalidModelError as error:
        if not distribution.published_sha256(model_version):
            logger.warning("%s is registered but not published, so no worker can fetch it: %s", model_version, error)


def model_version_sync(*, model_dir: Path | None = None) -> list[ModelVersion]:
    """Register every exported model under ``MODEL_DIR`` and activate the default
    (``MODEL_NAME``, highest version) if none is active yet. A folder the runner would
    refuse is skipped with a warning."""
    root = Path(model_dir or settings.MODEL_DIR)
    found = []
    for metadata_path in sorted(root.glob("*/*/metadata.json")):
        try:
            exported = export_read(metadata_path.parent)
        except ModelLoadError as error:
            logger.warning("Skipping %s: %s", metadata_path.parent, error)
            continue
        found.append(_model_version_store(exported=exported))
    if found and not ModelVersion.objects.filter(is_active=True).exists():
        default = [v for v in found if v.name == settings.MODEL_NAME] or found
        model_version_activate(
            model_version=max(default, key=lambda v: version_key(v.version)), kind=ModelActivationKind.DEFAULT
        )
    return found


def model_version_register(*, model_dir: Path, candidate: bool = False) -> ModelVersion:
    """Register one exported folder in place (nothing is copied) after checking it as
    the runner reads it (``metadata.json`` format_version and input_size, ``labels.json``
    one entry per class). It is then ``available`` (``candidate`` with ``candidate=True``),
    a retired version included; registering again refreshes classes, metrics and parent
    and leaves the active version active. Raises ``InvalidModelError``."""
    try:
        exported = export_read(Path(model_dir).resolve())
    except ModelLoadError as error:
        raise InvalidModelError(str(error)) from error
    status = ModelVersionStatus.CANDIDATE if candidate else ModelVersionStatus.AVAILABLE
    return _model_version_store(exported=exported, status=status)


def model_version_retire(*, model_version: ModelVersion) -> ModelVersion:
    """Take a version out of use: it keeps its predictions but cannot be activated (or
    rolled back to) until registered again. Raises ``ConflictError`` for the active one."""
    # Conditional: a version activated meanwhile (another request) is not retired.
    retired = ModelVersion.objects.filter(pk=model_version.pk, is_active=False).update(
        status=ModelVersionStatus.RETIRED, traffic_percent=0
    )
    registry_selectors.model_versions_changed()  # a bulk update: no save signal
    if not retired:
        raise ConflictError(
            f"{model_version.name} v{model_version.version} is active; activate another version before retiring it."
        )
    model_version.refresh_from_db()
    return model_version


@transaction.atomic
def model_version_activate(
    *, model_version: ModelVersion, user: User | None = None, kind: str = ModelActivationKind.ACTIVATE
) -> ModelVersion:
    """Make ``model_version`` the one new predictions use and record the switch (who,
    when, from which version). Workers resolve the active version before each batch, so
    the next prediction uses it without a restart. Activating the active version changes
    nothing. Raises ``ConflictError`` for a retired version, ``ModelUnavailableError``
    when its files are missing or unreadable."""
    # Lock the current active row so two switches at once cannot both record "from" it.
    current = ModelVersion.objects.select_for_update().filter(is_active=True).first()
    if current is not None and current.pk == model_version.pk:
        return current
    if model_version.status == ModelVersionStatus.RETIRED:
        raise ConflictError(f"{model_version} is retired; register it again to use it.")
    try:
        if settings.MODEL_DISTRIBUTION:  # the files are in the bucket, not on this host
            if not distribution.model_version_is_published(model_version=model_version):
                raise ModelLoadError(f"{model_version} is not published to the model store")
        else:
            export_read(model_version.path)
    except ModelLoadError as error:
        logger.warning("Not activating %s: %s", model_version, error)
        raise ModelUnavailableError(
            f"{model_version} cannot be activated: its exported files are missing (see the server log for where)."
        ) from error
    if current is not None:
        current.is_active = False
        current.status = ModelVersionStatus.AVAILABLE
        current.save(update_fields=["is_active", "status"])
    model_version.is_active = True
    model_version.status = ModelVersionStatus.ACTIVE
    model_version.traffic_percent = 0  # an A/B candidate activated: the test is over, it gets everything
    model_version.full_clean()
    model_version.save(update_fields=["is_active", "status", "traffic_percent"])
    activation = ModelActivation(
        model_version=model_version, previous=current, kind=kind, activated_by=user, activated_at=timezone.now()
    )
    activation.full_clean()
    activation.save()
    logger.info("Model %s activated (%s, from %s, by %s)", model_version, kind, current, user or "the system")
    return model_version


def model_version_traffic_check(*, model_version: ModelVersion, traffic_percent: int, lock: bool = False) -> None:
    """The rules of a share of traffic (``model_version_set_traffic``; the admin form
    asks them too): 0-100, a candidate only, one candidate at a time."""
    if not 0 <= traffic_percent <= 100:
        raise ApplicationError("traffic_percent must be between 0 and 100.", field="traffic_percent")
    if traffic_percent and model_version.status != ModelVersionStatus.CANDIDATE:
        # 409: a valid share for this version's state; the request itself is well formed.
        raise ConflictError(
            f"{model_version} is {model_version.status}; only a candidate version gets a share of traffic "
            "(register_model --candidate).",
            field="traffic_percent",
        )
    others = ModelVersion.objects.filter(traffic_percent__gt=0).exclude(pk=model_version.pk)
    other = (others.select_for_update() if lock else others).first()
    if traffic_percent and other is not None:
        raise ConflictError(
            f"{other} already gets {other.traffic_percent} % of traffic; set it to 0 first (one A/B test at a time).",
            field="traffic_percent",
        )


@transaction.atomic
def model_version_set_traffic(
    *, model_version: ModelVersion, traffic_percent: int, user: User | None = None
) -> ModelVersion:
    """Give a candidate version ``traffic_percent`` (0-100) of users for an A/B test:
    their new predictions run with it (``registry_selectors.model_version_for_user``, sticky per
    user), everyone else's with the active version; 0 ends the test. Predictions already
    submitted keep the version they were given.

    Raises ``ApplicationError`` (400, field ``traffic_percent``) for a value out of range,
    ``ConflictError`` (409) for a version that is not a candidate or when another
    candidate already has a share (one test at a time)."""
    locked = ModelVersion.objects.select_for_update().get(pk=model_version.pk)
    model_version_traffic_check(model_version=locked, traffic_percent=traffic_percent, lock=True)
    locked.traffic_percent = traffic_percent
    locked.full_clean()
    locked.save(update_fields=["traffic_percent"])
    logger.info("Model %s gets %d %% of traffic (by %s)", locked, traffic_percent, user or "the system")
    model_version.traffic_percent = traffic_percent
    return locked


def model_version_rollback_check(*, lock: bool = False) -> tuple[ModelVersion, ModelVersion]:
    """``(active, target)`` of a rollback (``model_version_rollback``; the admin asks it
    before its confirmation page). Raises ``ConflictError`` when there is no version to
    go back to."""
    actives = ModelVersion.objects.filter(is_active=True)
    active = (actives.select_for_update() if lock else actives).first()
    if active is None:
        raise ConflictError("No model version is active, so there is nothing to roll back.")
    target = registry_selectors.model_version_rollback_target(active=active)
    if target is None:
        raise ConflictError(f"{active} was the first active version; there is no previous one to roll back to.")
    if target.status == ModelVersionStatus.RETIRED:
        raise ConflictError(f"The previous version, {target}, is retired; activate another version instead.")
    return active, target


@transaction.atomic
def model_version_rollback(*, user: User | None = None) -> ModelVersion:
    """Activate the version that was active before the current one (recorded as a
    rollback; rolling back again goes one further back). Raises ``ConflictError`` when
    there is none to go back to."""
    _, target = model_version_rollback_check(lock=True)
    return model_version_activate(model_version=target, user=user, kind=ModelActivationKind.ROLLBACK)
