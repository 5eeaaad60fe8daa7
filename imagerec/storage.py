"""Where media and published models live: the settings group of ``MEDIA_STORAGE``.

``MEDIA_STORAGE=local`` (the default, ``make run``): files under ``MEDIA_ROOT``.
``MEDIA_STORAGE=s3``: django-storages' S3 backend (boto3) on the bucket named by
django-storages' own variables, each also read from ``NAME_FILE`` (imagerec/env.py):
``AWS_S3_ENDPOINT_URL``, ``AWS_STORAGE_BUCKET_NAME``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``. Pointed at a loopback endpoint (``make storage``: SeaweedFS on
127.0.0.1:8333) the local defaults below apply; any other endpoint refuses to start
without its keys. Images are never served from the bucket: pages and the API stream
them through the app after the access check (predictions/media.py), so the endpoint
needs no public address. docs/operations/object-storage.md.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from django.core.exceptions import ImproperlyConfigured

from .env import env

__all__ = [
    "DIRECT_UPLOAD_BEAT_SCHEDULE",
    "DIRECT_UPLOAD_ENDPOINT_URL",
    "DIRECT_UPLOAD_EXPIRES_SECONDS",
    "media_storage_backend",
]

# `make storage` and bin/storage configure SeaweedFS with these when nothing is set.
LOCAL_ENDPOINT = "http://127.0.0.1:8333"
LOCAL_BUCKET = "imagerec"
LOCAL_ACCESS_KEY_ID = "imagerec"
LOCAL_SECRET_ACCESS_KEY = "imagerec-local-only"  # noqa: S105 - loopback-only default, documented
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
LOCAL_MEDIA_BACKEND = "django.core.files.storage.FileSystemStorage"

# Direct uploads (MEDIA_STORAGE=s3, POST /api/v1/uploads/): a presigned PUT is good for
# DIRECT_UPLOAD_EXPIRES_SECONDS and its commit for twice that; an object never committed
# is deleted by the sweep (every DIRECT_UPLOAD_SWEEP_SECONDS, maintenance queue) once its
# commit can no longer come. DIRECT_UPLOAD_ENDPOINT_URL: the S3 address clients reach, when
# it is not AWS_S3_ENDPOINT_URL (the one the app uses); the presigned URL names it.
DIRECT_UPLOAD_EXPIRES_SECONDS = env.int("DIRECT_UPLOAD_EXPIRES_SECONDS", default=300)
DIRECT_UPLOAD_ENDPOINT_URL = env.str("DIRECT_UPLOAD_ENDPOINT_URL", default="").strip()
if DIRECT_UPLOAD_EXPIRES_SECONDS < 1:
    raise ImproperlyConfigured("DIRECT_UPLOAD_EXPIRES_SECONDS must be positive")
DIRECT_UPLOAD_BEAT_SCHEDULE = {
    "direct-upload-sweep": {
        "task": "predictions.tasks.direct_upload_sweep",
        "schedule": float(env.int("DIRECT_UPLOAD_SWEEP_SECONDS", default=600)),
    },
}


def media_storage_backend() -> dict[str, Any]:
    """The ``STORAGES["default"]`` entry for ``MEDIA_STORAGE`` (local or s3)."""
    kind = env.choice("MEDIA_STORAGE", default="local", choices=("local", "s3"))
    if kind == "local":
        return {"BACKEND": LOCAL_MEDIA_BACKEND}
    endpoint = env.str("AWS_S3_ENDPOINT_URL", default=LOCAL_ENDPOINT).strip()
    loopback = (urlsplit(endpoint).hostname or "") in LOOPBACK_HOSTS
    # Elsewhere no default: a missing key refuses to start, naming the variable.
    access_key = env.str("AWS_ACCESS_KEY_ID", default=LOCAL_ACCESS_KEY_ID if loopback else env.NOTSET)
    secret_key = env.str("AWS_SECRET_ACCESS_KEY", default=LOCAL_SECRET_ACCESS_KEY if loopback else env.NOTSET)
    if not access_key or not secret_key:
        raise ImproperlyConfigured("Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for MEDIA_STORAGE=s3")
    bucket = env.str("AWS_STORAGE_BUCKET_NAME", default=LOCAL_BUCKET)
    return s3_backend(endpoint=endpoint, bucket=bucket, access_key=access_key, secret_key=secret_key)


def s3_backend(*, endpoint: str, bucket: str, access_key: str, secret_key: str) -> dict[str, Any]:
    """The django-storages S3 entry of ``STORAGES`` for one bucket (also what the tests
    point at their SeaweedFS)."""
    return {
        # django-storages' S3Storage, one connection per process (imagerec/s3storage.py).
        "BACKEND": "imagerec.s3storage.S3MediaStorage",
        "OPTIONS": {
            "endpoint_url": endpoint,
            "bucket_name": bucket,
            "access_key": access_key,
            "secret_key": secret_key,
            "region_name": env.str("AWS_S3_REGION_NAME", default="us-east-1"),
            "addressing_style": env.str("AWS_S3_ADDRESSING_STYLE", default="path"),
            "signature_version": "s3v4",
            # Private objects. Every name the app writes is unique (a UUID in it) or replaced on
            # purpose (a published model file): no existence check (a HEAD) before each write.
            "default_acl": None,
            "file_overwrite": True,
            "querystring_auth": True,
            # Small images: one request each, no transfer thread pool.
            "transfer_config": TransferConfig(use_threads=False),
            # An outage fails fast (the worker's task retries, an upload answers 503) instead
            # of hanging a request: short timeouts, two attempts per call.
            "client_config": Config(
                connect_timeout=env.float("AWS_S3_CONNECT_TIMEOUT", default=2),
                read_timeout=env.float("AWS_S3_READ_TIMEOUT", default=10),
                retries={"max_attempts": 2, "mode": "standard"},
                tcp_keepalive=True,
            ),
        },
    }
