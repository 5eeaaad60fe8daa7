"""What the Models page shows: every version with its measured figures, the A/B test and
its live comparison, what a rollback would go back to, the latest switches, the
reprocess jobs' progress and the learning loop's cycles. Reads only; every user's predictions, so only for callers that
checked ``access.can_change_model_versions``."""

from __future__ import annotations

from dataclasses import dataclass, field

from predictions.exceptions import ApplicationError
from predictions.learning import selectors as learning_selectors
from predictions.models import ModelActivation, ModelVersion, ModelVersionStatus, ReprocessJob
from predictions.operations.stats.cards import model_card_facts
from predictions.operations.stats.figures import ModelVersionFigures, model_version_figures
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services
from predictions.registry.switches import WINDOW_DAYS
from predictions.reprocessing import selectors as reprocess_selectors


@dataclass(frozen=True)
class ModelVersionCard:
    """One version on the Models page: its figures, its model card in words, what may be done."""

    figures: ModelVersionFigures
    facts: list[str]
    can_activate: bool  # neither active nor retired

    @property
    def model_version(self) -> ModelVersion:
        return self.figures.model_version


@dataclass(frozen=True)
class ReprocessProgress:
    job: ReprocessJob
    counts: reprocess_selectors.ReprocessCounts

    @property
    def finished(self) -> int:
        return self.counts.done + self.counts.failed

    @property
    def total(self) -> int:
        return max(self.job.total, self.finished + self.counts.waiting + self.counts.running)

    @property
    def percent(self) -> int:
        return round(100 * self.finished / self.total) if self.total else 100


@dataclass(frozen=True)
class ModelsOverview:
    days: int
    cards: list[ModelVersionCard]
    active: ModelVersionCard | None
    candidate: ModelVersionCard | None  # the A/B candidate: the one with a share, else the newest candidate
    candidates: list[ModelVersion]  # every candidate, for the share form
    rollback_target: ModelVersion | None
    rollback_refusal: str  # why there is no rollback, in words
    activations: list[ModelActivation] = field(default_factory=list)
    reprocess: list[ReprocessProgress] = field(default_factory=list)
    learning: learning_selectors.LearningPanel | None = None

    @property
    def active_share(self) -> int:
        """The share of users the active version classifies for (100 without an A/B test)."""
        return 100 - (self.candidate.model_version.traffic_percent if self.candidate else 0)


def models_overview(*, days: int = WINDOW_DAYS, activations: int = 8, jobs: int = 5) -> ModelsOverview:
    """Everything the Models page shows: two queries per registered version for its
    figures (a registry holds a handful), one for the switches, a few per recent job."""
    versions = list(registry_selectors.model_version_list())
    order: dict[str, int] = {
        ModelVersionStatus.ACTIVE: 0,
        ModelVersionStatus.CANDIDATE: 1,
        ModelVersionStatus.AVAILABLE: 2,
    }
    versions.sort(key=lambda v: (order.get(v.status, 3), v.name, -v.created_at.timestamp()))
    cards = [
        ModelVersionCard(
            figures=model_version_figures(model_version=version, days=days),
            facts=model_card_facts(version.metrics, classes=len(version.classes)),
            can_activate=not version.is_active and version.status != ModelVersionStatus.RETIRED,
        )
        for version in versions
    ]
    active = next((card for card in cards if card.model_version.is_active), None)
    candidates = [card for card in cards if card.model_version.status == ModelVersionStatus.CANDIDATE]
    candidate = next((card for card in candidates if card.model_version.traffic_percent), None) or next(
        iter(sorted(candidates, key=lambda card: -card.model_version.created_at.timestamp())), None
    )
    try:
        _, target = registry_services.model_version_rollback_check()
        target_version, refusal = target, ""
    except ApplicationError as error:
        target_version, refusal = None, error.message
    return ModelsOverview(
        days=days,
        cards=cards,
        active=active,
        candidate=candidate,
        candidates=[card.model_version for card in candidates],
        rollback_target=target_version,
        rollback_refusal=refusal,
        activations=list(registry_selectors.model_activation_list(limit=activations)),
        reprocess=[
            ReprocessProgress(job=job, counts=reprocess_selectors.reprocess_job_counts(job=job))
            for job in ReprocessJob.objects.select_related("model_version", "created_by")[:jobs]
        ],
        learning=learning_selectors.learning_panel(),
    )
