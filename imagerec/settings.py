"""imagerec settings: every value comes from the environment, with defaults that
make ``make run`` work on a laptop (SQLite, a filesystem broker, DEBUG on).

See docs/configuration.md for the full list of variables.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import django_stubs_ext
from django.core.exceptions import ImproperlyConfigured

from .env import env
from .fairness import EXPLANATIONS_PENDING_PER_USER, INFLIGHT_PER_USER, MAX_DECODE_BYTES  # noqa: F401
from .frontdoor import ANNOUNCED_CACHE_MAX_SECONDS, ANNOUNCED_CACHE_SECONDS, API_FAST_PATH  # noqa: F401
from .learning import *  # noqa: F403 - LEARNING_* (docs/model/learning.md)
from .openapi import OPENAPI_SETTINGS
from .storage import *  # noqa: F403 - media_storage_backend, DIRECT_UPLOAD_* (imagerec/storage.py)
from .storage import LOCAL_MEDIA_BACKEND

# Django's generic classes (``ModelAdmin[Prediction]``) subscriptable at run time, as mypy sees them.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
# SQLite file, broker folders and the file cache live here (relative paths are taken
# from BASE_DIR). Nothing is created at import: `manage.py`, the broker transport and
# the cache create what they use (a read-only image can import these settings).
VAR_DIR = BASE_DIR / env.str("VAR_DIR", default="var")


def env_list(name: str, default: str) -> list[str]:
    """A comma-separated list; blanks around items are dropped."""
    return [item.strip() for item in env.str(name, default=default).split(",") if item.strip()]


DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false")
    SECRET_KEY = "django-insecure-local-development-only"  # noqa: S105 - DEBUG-only default

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "servestatic.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "adrf",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "axes",
    "csp",
    "accounts",
    "predictions",
]

SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002"]  # they look for Django's class paths only
MIDDLEWARE = [
    "predictions.operations.metrics.RequestMetricsMiddleware",  # first: times the whole request
    # Django's / django-csp's, hooks in the event loop (imagerec/middleware.py; checked by predictions.W001/2).
    "imagerec.middleware.SecurityMiddleware",
    "imagerec.middleware.CSPMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "imagerec.middleware.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "imagerec.middleware.XFrameOptionsMiddleware",
    # Times in the browser's zone (the tz cookie); the friendly 404 page under DEBUG too.
    "accounts.middleware.BrowserTimezoneMiddleware",
    "imagerec.middleware.FriendlyNotFoundMiddleware",
    # Last: turns a lockout found inside authenticate() into the 429 page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "imagerec.urls"
WSGI_APPLICATION = "imagerec.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.database(
        "DATABASE_URL",
        default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env.int("DATABASE_CONN_MAX_AGE", default=0),
        # A connection broken by a database restart is replaced before use, not after a failure.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web process and the worker write to the same file: WAL lets readers run
    # beside a writer, IMMEDIATE transactions take the write lock up front (so the busy
    # timeout applies instead of an instant "database is locked"), and tests get a file
    # (not :memory:) that a worker process can open.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "timeout": 30,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test-db.sqlite3")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("DATABASE_POOL", default=True):
    # A pool per process (psycopg 3): under ASGI every request runs its sync part in a
    # fresh thread, so without one each request would open (and PostgreSQL fork) a new
    # connection, a few ms of CPU each on both sides.
    if DATABASES["default"]["CONN_MAX_AGE"]:
        raise ImproperlyConfigured("DATABASE_CONN_MAX_AGE must be 0 with DATABASE_POOL on")
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=10),
        "timeout": 10,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Throttling counters (API submissions) live in the cache: share it
# between processes with CACHE_URL=redis://... in production.
CACHE_URL = env.str("CACHE_URL", default="")
if CACHE_URL and not CACHE_URL.startswith(("redis://", "rediss://")):
    raise ImproperlyConfigured(f"CACHE_URL must be a redis:// or rediss:// URL (or empty for files), not {CACHE_URL!r}")
CACHES = {
    "default": {"BACKEND": "imagerec.cache.SharedPoolRedisCache", "LOCATION": CACHE_URL}  # one pool per process
    if CACHE_URL.startswith(("redis://", "rediss://"))
    # Files are shared by the web server and the worker on one machine (make run).
    else {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(VAR_DIR / "cache")}
}
LOGIN_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
LOGIN_FAILURE_WINDOW_SECONDS = env.int("LOGIN_FAILURE_WINDOW_SECONDS", default=300)

# Failed logins: django-axes counts them inside authenticate(), so every login path (the
# login page, /admin/login/, any added later) is covered by one mechanism. Per username
# and client address, kept in the database (the admin lists them), reset by a success;
# a locked-out pair gets accounts.views.lockout (429) until the cool-off has passed or
# `manage.py axes_reset_username <name>` unlocks it. The address is REMOTE_ADDR only:
# X-Forwarded-For is whatever the client sends unless a trusted proxy rewrites it.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = LOGIN_FAILURE_LIMIT
AXES_COOLOFF_TIME = timedelta(seconds=LOGIN_FAILURE_WINDOW_SECONDS)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "accounts.views.lockout"
# Read only if django-ipware is installed (axes falls back to REMOTE_ADDR without it).
AXES_IPWARE_META_PRECEDENCE_ORDER = ("REMOTE_ADDR",)

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    # Refuses nothing: replaces the user's API token whenever their password changes.
    {"NAME": "accounts.passwords.ApiTokenRotation"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "predictions:upload"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
FORMAT_MODULE_PATH = ["imagerec.formats"]  # ISO dates everywhere, the admin included
TIME_ZONE = env.time_zone("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=VAR_DIR / "static"))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    # MEDIA_STORAGE: local (MEDIA_ROOT) or s3 (django-storages, AWS_* variables; imagerec/storage.py).
    "default": media_storage_backend(),  # noqa: F405
    "staticfiles": {
        "BACKEND": "servestatic.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# Uploaded images are private: never served from MEDIA_URL, only through the permission-checked image view.
MEDIA_ROOT = Path(env.str("MEDIA_ROOT", default=BASE_DIR / "media"))
MEDIA_URL = "/media-not-served/"

# --- Uploads -----------------------------------------------------------------
MAX_UPLOAD_BYTES = env.int("MAX_UPLOAD_BYTES", default=20 * 1024 * 1024)
MAX_IMAGE_PIXELS = env.int("MAX_IMAGE_PIXELS", default=50_000_000)
MAX_FILES_PER_REQUEST = env.int("MAX_FILES_PER_REQUEST", default=20)
# A whole request body, refused with 413 before it is read (imagerec.request_limits).
MAX_REQUEST_BYTES = env.int("MAX_REQUEST_BYTES", default=100 * 1024 * 1024)
if MAX_REQUEST_BYTES < MAX_UPLOAD_BYTES:
    raise ImproperlyConfigured("MAX_REQUEST_BYTES must be at least MAX_UPLOAD_BYTES")
DATA_UPLOAD_MAX_NUMBER_FILES = MAX_FILES_PER_REQUEST + 1
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_BYTES

# --- Model -------------------------------------------------------------------
MODEL_DIR = Path(env.str("MODEL_DIR", default=BASE_DIR / "models"))
MODEL_NAME = env.str("MODEL_NAME", default="efficientnet_lite0")
MODEL_ENGINE = env.str("MODEL_ENGINE", default="savedmodel")
MODEL_THREADS = env.int("MODEL_THREADS", default=0)  # 0 = let the engine decide
# Models distributed through the media bucket (predictions/registry/distribution.py): on with
# MEDIA_STORAGE=s3. Workers fetch a version into MODEL_CACHE_DIR, keeping at most that many.
MODEL_DISTRIBUTION = env.bool("MODEL_DISTRIBUTION", default=STORAGES["default"]["BACKEND"] != LOCAL_MEDIA_BACKEND)
MODEL_CACHE_DIR = VAR_DIR / env.str("MODEL_CACHE_DIR", default="model-cache")
MODEL_CACHE_MAX_VERSIONS = env.int("MODEL_CACHE_MAX_VERSIONS", default=3)
DEFAULT_TOP_K = env.int("DEFAULT_TOP_K", default=5)
MAX_TOP_K = 20
# Micro-batching: a worker classifies its message's image together with up to
# INFERENCE_BATCH_SIZE - 1 others already waiting, in one model call. With
# INFERENCE_BATCH_WAIT_MS > 0 a batch that is not full waits that long once for more
# (0: never wait; an idle worker answers a lone image at once). 32: docs/benchmarks.md.
INFERENCE_BATCH_SIZE = env.int("INFERENCE_BATCH_SIZE", default=32)
INFERENCE_BATCH_WAIT_MS = env.int("INFERENCE_BATCH_WAIT_MS", default=0)
if not 1 <= INFERENCE_BATCH_SIZE <= 32:
    raise ImproperlyConfigured("INFERENCE_BATCH_SIZE must be between 1 and 32")
# Same bytes, same active model: reuse the stored result. "user" (the uploader's own
# earlier predictions), "all" (anyone's) or "off".
RESULT_CACHE = env.choice("RESULT_CACHE", default="user", choices=("user", "all", "off"))

# --- Celery ------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="filesystem://")
_broker_dir = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem"):
    CELERY_BROKER_TRANSPORT = "imagerec.broker:Transport"  # atomic message files
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    CELERY_BROKER_TRANSPORT = "imagerec.broker:RedisTransport"  # one client per channel, not per message
CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = (
    {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        "polling_interval": 0.02,  # seconds between folder scans: keeps queue wait low
    }
    if CELERY_BROKER_URL.startswith("filesystem")
    else {"visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=600)}
)
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_IGNORE_RESULT = True  # the Prediction row is the result store
# No result backend, shared by all threads (Celery builds one per thread: under ASGI, one per upload).
CELERY_RESULT_BACKEND_THREAD_SAFE = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The pool child loads and warms up the model before it reports alive (~3 s here).
CELERY_WORKER_PROC_ALIVE_TIMEOUT = env.int("CELERY_WORKER_PROC_ALIVE_TIMEOUT", default=120)
CELERY_TASK_SOFT_TIME_LIMIT = env.float("CELERY_TASK_SOFT_TIME_LIMIT", default=120)
CELERY_TASK_TIME_LIMIT = env.float("CELERY_TASK_TIME_LIMIT", default=180)
# Inference has its own queue; the rest goes to "maintenance": a slow stats refresh never holds up an image.
CELERY_TASK_ROUTES = {
    "predictions.tasks.prediction_run": {"queue": "inference"},
    "predictions.explanations.tasks.explanation_compute": {"queue": "inference"},  # Grad-CAM needs the model
    "predictions.tasks.prediction_reconcile": {"queue": "maintenance"},
    "predictions.tasks.media_delete": {"queue": "maintenance"},
    "predictions.tasks.direct_upload_sweep": {"queue": "maintenance"},
    "predictions.operations.tasks.stats_refresh": {"queue": "maintenance"},
    "predictions.reprocessing.tasks.reprocess_step": {"queue": "maintenance"},
    **LEARNING_TASK_ROUTES,  # noqa: F405 - training on its own queue
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Celery's Django fixup closes the database connections (and a connection pool) around
# every task unless told to reuse them; predictions.tasks checks them between tasks the
# way Django does between requests instead.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_SEND_TASK_EVENTS = False
# Fail fast on a broker outage at submission: the row stays pending for the reconciler, no hanging request.
CELERY_BROKER_TRANSPORT_OPTIONS.setdefault("max_retries", 2)
CELERY_BROKER_CONNECTION_TIMEOUT = 3
RECONCILE_AFTER_SECONDS = env.int("RECONCILE_AFTER_SECONDS", default=300)
MAX_ATTEMPTS = env.int("MAX_ATTEMPTS", default=3)  # claims of one prediction before it is failed

# Long-poll wake-ups (predictions.events): Redis pub/sub, by default on the broker's or
# the cache's Redis; empty (no Redis anywhere) means waiters re-read their row instead.
EVENTS_REDIS_URL = env.str(
    "EVENTS_REDIS_URL",
    default=next((url for url in (CELERY_BROKER_URL, CACHE_URL) if url.startswith(("redis://", "rediss://"))), ""),
)
EVENTS_RECHECK_SECONDS = env.float("EVENTS_RECHECK_SECONDS", default=5)

# --- REST API ----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "predictions.api.authentication.KeptTokenAuthentication",  # DRF's, with the token kept while heard
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "predictions.api.errors.exception_handler",
    # DRF's three, with JSON nested too deeply for the decoder a 400 instead of a 500.
    "DEFAULT_PARSER_CLASSES": [
        "predictions.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_THROTTLE_RATES": {
        "submit": env.rate("THROTTLE_SUBMIT", default="120/min"),
        "read": env.rate("THROTTLE_READ", default="1200/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
}
SPECTACULAR_SETTINGS = OPENAPI_SETTINGS  # imagerec/openapi.py: fixed, none from the environment

# --- Content-Security-Policy (django-csp): everything from here, nothing inline, no framing.
# data: images are Swagger UI's icons, blob: ones the upload page's previews.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# --- Security behind DEBUG=False ---------------------------------------------
if not DEBUG:
    SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=True)
    CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=True)
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOG_LEVEL = env.choice("LOG_LEVEL", default="info", choices=("debug", "info", "warning", "error", "critical")).upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
}

# --- Observability: stats page, health checks, /metrics ------------------------
# Predictions below this confidence count as "low confidence" on the stats page.
LOW_CONFIDENCE_THRESHOLD = env.float("LOW_CONFIDENCE_THRESHOLD", default=0.5)
# Workers write a heartbeat this often; readiness wants one newer than the max age.
WORKER_HEARTBEAT_INTERVAL_SECONDS = env.int("WORKER_HEARTBEAT_INTERVAL_SECONDS", default=15)
WORKER_HEARTBEAT_MAX_AGE_SECONDS = env.int("WORKER_HEARTBEAT_MAX_AGE_SECONDS", default=60)
# Seconds the readiness broker check (and the metrics queue-depth read) may take.
HEALTH_BROKER_TIMEOUT_SECONDS = env.float("HEALTH_BROKER_TIMEOUT_SECONDS", default=2)
# /metrics (and /health/ready's details): a session with predictions.view_prediction, or
# "Authorization: Bearer $METRICS_TOKEN", or a client IP listed here.
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# Set for several gunicorn worker processes (compose does): prometheus-client reads it
# itself at import; /metrics then merges every process's request metrics from there.
PROMETHEUS_MULTIPROC_DIR = env.str("PROMETHEUS_MULTIPROC_DIR", default="")
METRICS_ALLOWED_IPS = env_list("METRICS_ALLOWED_IPS", "")
# PostgreSQL work_mem for the stats queries only (SET LOCAL): keeps percentile sorts in memory.
STATS_WORK_MEM = env.str("STATS_WORK_MEM", default="64MB")
# The stats page/API serve a report up to this old; beat refreshes the all-users one.
STATS_CACHE_SECONDS = env.int("STATS_CACHE_SECONDS", default=120)
STATS_REFRESH_SECONDS = env.int("STATS_REFRESH_SECONDS", default=60)

# Celery beat: the reconciler, the all-users stats refresh and the learning tick.
CELERY_BEAT_SCHEDULE = {
    **LEARNING_BEAT_SCHEDULE,  # noqa: F405
    **DIRECT_UPLOAD_BEAT_SCHEDULE,  # noqa: F405 - uncommitted direct uploads deleted
    "reconcile-stuck-predictions": {
        "task": "predictions.tasks.prediction_reconcile",
        "schedule": float(env.int("RECONCILE_INTERVAL_SECONDS", default=60)),
    },
    "refresh-stats": {"task": "predictions.operations.tasks.stats_refresh", "schedule": float(STATS_REFRESH_SECONDS)},
}
