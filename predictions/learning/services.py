"""The continuous learning loop (docs/model/learning.md): when the active version has
enough new reviews, fine-tune a candidate on the reviewed images, keep it only if it is
not worse on a held-back slice of them, A/B test it on live traffic and promote or retire
it on a Bayesian comparison of the two arms' live top-1. Every step is a ``LearningCycle``
event, a log line and, when configured, an email to operators.

``learning_tick`` is the scheduled step (Celery beat, the maintenance queue; never trains);
``learning_cycle_train`` is the training step (the ``training`` queue's own worker), which
runs ``training.learning_round`` in a child process so no Celery process imports
TensorFlow.
"""

from __future__ import annotations

import json
import logging
import shutil
import smtplib
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import User
from django.core.mail import send_mail
from django.db import IntegrityError, transaction
from django.utils import timezone

from predictions.exceptions import ApplicationError
from predictions.learning import dataset
from predictions.learning import selectors as learning_selectors
from predictions.learning.models import LearningControl, LearningCycle, LearningCycleState
from predictions.learning.statistics import probability_better
from predictions.models import Correction, ModelActivationKind, ModelVersion, ModelVersionStatus
from predictions.registry import selectors as registry_selectors
from predictions.registry import services as registry_services

logger = logging.getLogger(__name__)
BASE_DIR = Path(settings.BASE_DIR)


@dataclass(frozen=True)
class HoldoutScore:
    """One version's answers on the held-back slice: ``right`` of ``count`` as reviewed."""

    count: int
    right: int

    @property
    def top1(self) -> float | None:
        return self.right / self.count if self.count else None


@dataclass(frozen=True)
class RoundResult:
    """What ``training.learning_round`` wrote: the candidate's folder and both scores."""

    target: Path
    seconds: float
    active: HoldoutScore
    candidate: HoldoutScore
    start: str  # what the candidate was initialised from, in words


def _start_text(start: dict[str, Any]) -> str:
    """``initialised_from`` of the candidate's metadata (``training.warm_start``), in words."""
    if start.get("version"):
        return f"warm-started from {start['version']}'s own weights"
    weights = start.get("weights", "ImageNet")
    return f"started from the {weights} weights, not the active version's: {start.get('reason')}"


@dataclass(frozen=True)
class TickOutcome:
    """What one tick did: ``queued`` a new cycle (to train), or ``cycle`` is the one it
    looked at; ``message`` says what happened or why nothing did."""

    message: str
    cycle: LearningCycle | None = None
    queued: bool = False


def _work_dir(cycle: LearningCycle) -> Path:
    return BASE_DIR / str(settings.LEARNING_WORK_DIR) / f"cycle-{cycle.pk}"


def learning_cycle_event(*, cycle: LearningCycle, message: str, state: str | None = None, warn: bool = False) -> None:
    """Record one step of ``cycle`` (its events, its reason, its state: a closed state
    closes it), log it and tell the operators by email when ``LEARNING_NOTIFY_EMAILS`` is set."""
    now = timezone.now()
    cycle.events = [*cycle.events, {"at": now.isoformat(), "message": message}]
    cycle.reason = message
    if state is not None:
        cycle.state = state
        if state not in (LearningCycleState.QUEUED, LearningCycleState.TRAINING, LearningCycleState.TESTING):
            cycle.is_open = False
            cycle.decided_at = now
    cycle.save()
    logger.log(logging.WARNING if warn else logging.INFO, "Learning cycle %s (%s): %s", cycle.pk, cycle.state, message)
    if settings.LEARNING_NOTIFY_EMAILS:
        try:
            send_mail(
                f"[imagerec] Learning cycle {cycle.pk}: {cycle.get_state_display()}",
                f"{message}\n\nThe Models page shows every cycle and its steps.",
                None,
                settings.LEARNING_NOTIFY_EMAILS,
            )
        except (OSError, smtplib.SMTPException) as error:
            logger.warning("Learning cycle %s: the email to operators failed: %s", cycle.pk, error)


def learning_pause_set(*, paused: bool, user: User | None = None) -> LearningControl:
    """Pause or resume the loop. Paused, no tick starts a cycle or decides a test (a test
    in progress keeps its share of users; set it to 0 on the Models page to stop it)."""
    control = LearningControl.objects.order_by("pk").first() or LearningControl()
    control.paused, control.changed_by, control.changed_at = paused, user, timezone.now()
    control.save()
    logger.info("Learning %s by %s", "paused" if paused else "resumed", user or "a command")
    return control


def learning_tick() -> TickOutcome:
    """One scheduled step: nothing when ``LEARNING_ENABLED`` is off or an operator paused
    the loop; else decide the open A/B test (``learning_cycle_decide``) or, with no cycle
    open, start one when it is due (``learning_cycle_start``). One thing per tick: a tick
    that closed a test starts the next cycle at the next tick."""
    if not settings.LEARNING_ENABLED:
        return TickOutcome("Learning is switched off (LEARNING_ENABLED).")
    if learning_selectors.learning_paused():
        return TickOutcome("Learning is paused by an operator.")
    open_cycle = learning_selectors.learning_cycle_open()
    if open_cycle is not None:
        if open_cycle.state == LearningCycleState.TESTING:
            with transaction.atomic():
                # Locked: a tick of beat and an operator's `learning_cycle --now` never both decide it.
                locked = LearningCycle.objects.select_for_update(of=("self",)).select_related("base", "candidate")
                cycle = locked.get(pk=open_cycle.pk)
                if cycle.state != LearningCycleState.TESTING:
                    return TickOutcome(f"Cycle {cycle.pk} was decided meanwhile: {cycle.reason}", cycle=cycle)
                return TickOutcome(learning_cycle_decide(cycle=cycle), cycle=cycle)
        if open_cycle.created_at < timezone.now() - timedelta(seconds=2 * settings.LEARNING_TRAIN_TIMEOUT_SECONDS):
            learning_cycle_event(
                cycle=open_cycle, message="Training never finished (no training worker?).", state="failed", warn=True
            )
            return TickOutcome(open_cycle.reason, cycle=open_cycle)
        return TickOutcome(f"Cycle {open_cycle.pk} is {open_cycle.get_state_display().lower()}.", cycle=open_cycle)
    return learning_cycle_start()


def learning_cycle_start() -> TickOutcome:
    """Start a cycle from the active version when it is due: ``LEARNING_MIN_REVIEWS`` usable
    reviews new since the previous cycle and at least two classes with
    ``LEARNING_MIN_PER_CLASS`` reviewed images, and no other A/B test running. The cycle is
    queued (its review split fixed now); the caller sends it to the training worker."""
    base = registry_selectors.model_version_active()
    if base is None:
        return TickOutcome("No model version is active.")
    if ModelVersion.objects.filter(traffic_percent__gt=0).exists():
        return TickOutcome("Another A/B test is running; a cycle starts once it ends.")
    last = learning_selectors.learning_cycle_last(counted=True)
    new = learning_selectors.new_review_count(base=base, since=last.created_at if last else None)
    if new < settings.LEARNING_MIN_REVIEWS:
        return TickOutcome(f"{new} new review(s) of {settings.LEARNING_MIN_REVIEWS} needed for a cycle.")
    split = dataset.review_split(
        reviews=learning_selectors.usable_review_list(base=base),
        min_per_class=settings.LEARNING_MIN_PER_CLASS,
        holdout_percent=settings.LEARNING_HOLDOUT_PERCENT,
    )
    if len(split.classes) < 2:
        return TickOutcome(
            f"{new} new reviews, but fewer than two classes have {settings.LEARNING_MIN_PER_CLASS} reviewed images."
        )
    try:
        with transaction.atomic():
            cycle = LearningCycle.objects.create(
                base=base, new_reviews=new, classes=split.classes, training_reviews=split.training,
                holdout_reviews=split.holdout, created_at=timezone.now(),
            )  # fmt: skip
    except IntegrityError:  # another tick opened one meanwhile
        return TickOutcome("Another cycle was started meanwhile.")
    learning_cycle_event(
        cycle=cycle,
        message=f"Started from {base}: {new} new reviews; {len(split.training)} reviewed images to train on and "
        f"{len(split.holdout)} held back, in {len(split.classes)} classes.",
    )
    return TickOutcome(cycle.reason, cycle=cycle, queued=True)


def _next_version(base: ModelVersion, out: Path) -> str:
    taken = set(ModelVersion.objects.filter(name=base.name).values_list("version", flat=True))
    highest = max((int(v) for v in taken if v.isdigit()), default=0)
    number = max(highest, int(base.version) if base.version.isdigit() else 0) + 1
    while str(number) in taken or (out / base.name / str(number)).exists():
        number += 1
    return str(number)


def learning_cycle_train(*, cycle_id: int) -> LearningCycle | None:
    """The training step of a queued cycle (idempotent: it claims the row, so a second
    delivery does nothing and returns ``None``): write the reviewed images, fine-tune and
    measure in ``training.learning_round`` (a child process), then register the candidate
    and start its A/B test at ``LEARNING_AB_SHARE`` %, or reject it when it is worse than
    the active version on the held-back slice."""
    claimed = LearningCycle.objects.filter(pk=cycle_id, state=LearningCycleState.QUEUED).update(
        state=LearningCycleState.TRAINING
    )
    if claimed != 1:
        return None
    cycle = LearningCycle.objects.select_related("base").get(pk=cycle_id)
    work = _work_dir(cycle)
    try:
        result = _train(cycle=cycle, work=work)
    except (ApplicationError, OSError, subprocess.SubprocessError, ValueError, KeyError) as error:
        learning_cycle_event(cycle=cycle, message=f"Training failed: {error}", state="failed", warn=True)
        return cycle
    active, candidate = result.active, result.candidate
    cycle.offline = {
        "count": active.count, "active_right": active.right, "candidate_right": candidate.right,
        "active_top1": active.top1, "candidate_top1": candidate.top1, "seconds": result.seconds,
    }  # fmt: skip
    cycle.trained_at = timezone.now()
    figures = f"{candidate.right} of {candidate.count} held-back reviews right, the active {active.right}"
    figures += f"; {result.start}"
    if candidate.right < active.right:
        # Its folder goes too: under MODEL_DIR, sync_models would otherwise register it.
        shutil.rmtree(result.target, ignore_errors=True)
        learning_cycle_event(cycle=cycle, message=f"Not registered, worse: {figures}.", state="rejected")
        return cycle
    try:
        model_version = registry_services.model_version_register(model_dir=result.target, candidate=True)
        cycle.candidate = model_version
        registry_services.model_version_set_traffic(
            model_version=model_version, traffic_percent=settings.LEARNING_AB_SHARE
        )
    except ApplicationError as error:
        learning_cycle_event(
            cycle=cycle, message=f"Trained, but not tested: {error.message}", state="failed", warn=True
        )
        return cycle
    cycle.testing_since = timezone.now()
    learning_cycle_event(
        cycle=cycle,
        message=f"Registered {model_version} as a candidate ({figures}; trained and measured in "
        f"{result.seconds:.0f} s); A/B test started with "
        f"{settings.LEARNING_AB_SHARE} % of users.",
        state="testing",
    )
    return cycle


def _train(*, cycle: LearningCycle, work: Path) -> RoundResult:
    """Write the dataset, run ``training.learning_round`` in a child process, read its result."""
    reviews = Correction.objects.select_related("prediction")
    held, prior = dataset.dataset_write(
        directory=work,
        training=reviews.filter(pk__in=cycle.training_reviews).order_by("pk"),
        holdout=reviews.filter(pk__in=cycle.holdout_reviews).order_by("pk"),
        base=cycle.base,
    )
    cycle.dataset_dir, cycle.prior_files = str(work / "data"), prior
    cycle.save(update_fields=["dataset_dir", "prior_files"])
    learning_cycle_event(
        cycle=cycle,
        message=f"Training on {len(cycle.training_reviews)} reviewed images"
        + (f" and {prior} from the fine-tuning folder of {cycle.base}." if prior else "."),
    )
    out = Path(settings.LEARNING_MODEL_DIR or settings.MODEL_DIR)
    if not out.is_absolute():
        out = BASE_DIR / out
    spec = {
        "cycle": cycle.pk, "base": cycle.base.path, "data": str(work / "data"), "out": str(out),
        "name": cycle.base.name, "version": _next_version(cycle.base, out), "workdir": str(work / "run"),
        "labels": {entry["class_id"]: entry["label"] for entry in cycle.base.classes}, "holdout": held,
        "config": {
            "warmup_epochs": settings.LEARNING_WARMUP_EPOCHS, "epochs": settings.LEARNING_EPOCHS,
            "input_size": settings.LEARNING_INPUT_SIZE, "verbose": 2,
        },
    }  # fmt: skip
    (work / "spec.json").write_text(json.dumps(spec, indent=2), encoding="utf-8")
    with open(work / "training.log", "wb") as log:
        finished = subprocess.run(
            [sys.executable, "-m", "training.learning_round", str(work / "spec.json"), str(work / "result.json")],
            cwd=BASE_DIR, stdout=log, stderr=subprocess.STDOUT, timeout=settings.LEARNING_TRAIN_TIMEOUT_SECONDS,
            check=False,
        )  # fmt: skip
    if finished.returncode != 0:
        tail = (work / "training.log").read_text(encoding="utf-8", errors="replace")[-600:]
        raise ApplicationError(f"training.learning_round exited with {finished.returncode}: …{tail}")
    result = json.loads((work / "result.json").read_text(encoding="utf-8"))
    return RoundResult(
        target=Path(result["target"]),
        seconds=float(result["seconds"]),
        active=HoldoutScore(count=int(result["active"]["count"]), right=int(result["active"]["right"])),
        candidate=HoldoutScore(count=int(result["candidate"]["count"]), right=int(result["candidate"]["right"])),
        start=_start_text(result.get("initialised_from") or {}),
    )


def learning_cycle_decide(*, cycle: LearningCycle) -> str:
    """Look at a cycle's A/B test: promote the candidate when P(its live top-1 > the
    active's) >= ``LEARNING_CONFIDENCE`` with ``LEARNING_MIN_ARM_REVIEWS`` reviews on each
    side, retire it when that probability is <= 1 - ``LEARNING_CONFIDENCE``, or when the test
    is older than ``LEARNING_MAX_DAYS`` or the candidate has ``LEARNING_MAX_REVIEWS``
    reviews without a decision; else keep testing. Ends the cycle when an operator already
    switched versions or took the candidate's users away. Returns what it did, in words."""
    candidate, base = cycle.candidate, cycle.base
    if candidate is None or cycle.testing_since is None:  # never for a testing cycle; not worth a crash
        learning_cycle_event(cycle=cycle, message="Testing, but without a candidate.", state="failed", warn=True)
        return cycle.reason
    candidate.refresh_from_db()
    base.refresh_from_db()
    if candidate.status != ModelVersionStatus.CANDIDATE or not candidate.traffic_percent or not base.is_active:
        learning_cycle_event(
            cycle=cycle,
            message=f"Test ended by an operator: {candidate} is {candidate.get_status_display().lower()}"
            f"{'' if candidate.traffic_percent else ' with no users'}, {base} "
            f"{'still' if base.is_active else 'no longer'} active.",
            state="ended",
        )
        return cycle.reason
    arm_candidate = learning_selectors.arm_stats(model_version=candidate, since=cycle.testing_since)
    arm_active = learning_selectors.arm_stats(model_version=base, since=cycle.testing_since)
    probability = probability_better(arm_candidate, arm_active)
    cycle.live = {
        "candidate_reviewed": arm_candidate.reviewed, "candidate_right": arm_candidate.right,
        "active_reviewed": arm_active.reviewed, "active_right": arm_active.right,
        "probability_better": round(probability, 4), "checked_at": timezone.now().isoformat(),
    }  # fmt: skip
    figures = (
        f"live top-1 {arm_candidate.right}/{arm_candidate.reviewed} against {arm_active.right}/{arm_active.reviewed}, "
        f"P(candidate better) = {probability:.3f}"
    )
    enough = min(arm_candidate.reviewed, arm_active.reviewed) >= settings.LEARNING_MIN_ARM_REVIEWS
    if enough and probability >= settings.LEARNING_CONFIDENCE:
        registry_services.model_version_activate(model_version=candidate, kind=ModelActivationKind.LEARNING)
        learning_cycle_event(cycle=cycle, message=f"Promoted {candidate}: {figures}.", state="promoted")
    elif enough and probability <= 1 - settings.LEARNING_CONFIDENCE:
        _retire(candidate)
        learning_cycle_event(cycle=cycle, message=f"Retired {candidate}, worse: {figures}.", state="retired")
    elif (
        timezone.now() - cycle.testing_since >= timedelta(days=settings.LEARNING_MAX_DAYS)
        or arm_candidate.reviewed >= settings.LEARNING_MAX_REVIEWS
    ):
        _retire(candidate)
        learning_cycle_event(
            cycle=cycle, message=f"Retired {candidate}, no decision within the limits: {figures}.", state="retired"
        )
    else:
        cycle.save(update_fields=["live"])
        return f"Still testing {candidate}: {figures}."
    return cycle.reason


@transaction.atomic
def _retire(candidate: ModelVersion) -> None:
    registry_services.model_version_set_traffic(model_version=candidate, traffic_percent=0)
    registry_services.model_version_retire(model_version=candidate)
