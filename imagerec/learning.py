"""Settings of the continuous learning loop (docs/model/learning.md), read from the
environment here so settings.py stays short; settings.py imports them."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured

from .env import env

# Off by default: the loop trains and switches models on its own once an operator turns it on.
LEARNING_ENABLED = env.bool("LEARNING_ENABLED", default=False)
# A cycle starts when the active version has this many new usable reviews since the last cycle...
LEARNING_MIN_REVIEWS = env.int("LEARNING_MIN_REVIEWS", default=200)
# ...and a class takes part only with this many reviewed images (at least two classes must).
LEARNING_MIN_PER_CLASS = env.int("LEARNING_MIN_PER_CLASS", default=10)
# The held-back slice of reviewed images (per class, at least one) both versions are measured on.
LEARNING_HOLDOUT_PERCENT = env.int("LEARNING_HOLDOUT_PERCENT", default=20)
# The share of users (1-100) a new candidate gets in its A/B test.
LEARNING_AB_SHARE = env.int("LEARNING_AB_SHARE", default=10)
# The decision: each arm needs this many reviews of its predictions made during the test...
LEARNING_MIN_ARM_REVIEWS = env.int("LEARNING_MIN_ARM_REVIEWS", default=100)
# ...then P(candidate's live top-1 > active's) >= this promotes it, <= 1 - this retires it.
LEARNING_CONFIDENCE = env.float("LEARNING_CONFIDENCE", default=0.95)
# Undecided after this many days or this many candidate reviews: retired as inconclusive.
LEARNING_MAX_DAYS = env.int("LEARNING_MAX_DAYS", default=14)
LEARNING_MAX_REVIEWS = env.int("LEARNING_MAX_REVIEWS", default=2000)
# How often beat runs the learning tick (checks the test, starts a cycle when one is due).
LEARNING_CHECK_SECONDS = env.int("LEARNING_CHECK_SECONDS", default=3600)
# The fine-tune (training.finetune): epochs, input side (0: the active version's), time limit.
LEARNING_WARMUP_EPOCHS = env.int("LEARNING_WARMUP_EPOCHS", default=2)
LEARNING_EPOCHS = env.int("LEARNING_EPOCHS", default=8)
LEARNING_INPUT_SIZE = env.int("LEARNING_INPUT_SIZE", default=0)
LEARNING_TRAIN_TIMEOUT_SECONDS = env.int("LEARNING_TRAIN_TIMEOUT_SECONDS", default=3600)
# Where cycles write their dataset and logs, and where candidates are exported ("": MODEL_DIR).
LEARNING_WORK_DIR = env.str("LEARNING_WORK_DIR", default="var/learning")
LEARNING_MODEL_DIR = env.str("LEARNING_MODEL_DIR", default="")
# Operators told of every step by email (Django's EMAIL_* settings), besides the log and the Models page.
LEARNING_NOTIFY_EMAILS = [
    item.strip() for item in env.str("LEARNING_NOTIFY_EMAILS", default="").split(",") if item.strip()
]
# Django's mail settings, for those notices (nothing else sends email); unset host: localhost:25.
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=10)  # a mail server that does not answer never holds a cycle up
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="imagerec@localhost")

if not 1 <= LEARNING_AB_SHARE <= 100 or not 0 < LEARNING_HOLDOUT_PERCENT < 100:
    raise ImproperlyConfigured("LEARNING_AB_SHARE must be 1-100 and LEARNING_HOLDOUT_PERCENT 1-99")
if not 0.5 < LEARNING_CONFIDENCE < 1 or min(LEARNING_MIN_REVIEWS, LEARNING_MIN_PER_CLASS, LEARNING_MIN_ARM_REVIEWS) < 1:
    raise ImproperlyConfigured("LEARNING_CONFIDENCE must be in (0.5, 1) and the LEARNING_MIN_* settings positive")

# Training has its own queue and worker (celery -A imagerec worker -Q training): inference never waits on it.
LEARNING_TASK_ROUTES: dict[str, Any] = {
    "predictions.learning.tasks.learning_tick": {"queue": "maintenance"},
    "predictions.learning.tasks.learning_cycle_train": {"queue": "training"},
}
LEARNING_BEAT_SCHEDULE: dict[str, Any] = {
    "learning-tick": {"task": "predictions.learning.tasks.learning_tick", "schedule": float(LEARNING_CHECK_SECONDS)},
}
