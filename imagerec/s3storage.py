"""The media storage of ``MEDIA_STORAGE=s3``: django-storages' S3 backend with one boto3
connection per process instead of one per thread, and a one-request read.

Under ASGI each request runs its synchronous part in a new thread; django-storages keeps
its boto3 session and resource in a thread-local, so every upload would build a new one
(loading boto3's service models again, tens of milliseconds of CPU). The boto3 client
underneath is thread-safe, so the process shares one. ``read_bytes`` fetches an object
with a single GET (``open()`` does a HEAD, then the GET); a save is a single PUT. Direct
uploads (predictions/services/uploads.py) use ``presigned_put``, ``read_head``
and ``listed``. docs/operations/object-storage.md.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from storages.backends.s3 import S3Storage  # type: ignore[import-untyped]  # django-storages ships no types
from storages.utils import clean_name, is_seekable  # type: ignore[import-untyped]


def _missing(error: ClientError) -> bool:
    # No key, or no bucket yet: a 404 (a HEAD's error has no code, only the status).
    return bool(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404)


class S3MediaStorage(S3Storage):  # type: ignore[misc]
    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._shared_lock = threading.Lock()
        self._shared_connection: Any = None
        self._signers: dict[str, Any] = {}

    @property
    def connection(self) -> Any:
        if self._shared_connection is None:
            with self._shared_lock:
                if self._shared_connection is None:
                    self._shared_connection = S3Storage.connection.fget(self)
        return self._shared_connection

    def __getstate__(self) -> dict[str, Any]:
        state: dict[str, Any] = super().__getstate__()
        state.pop("_shared_lock", None)
        state["_shared_connection"] = None
        state["_signers"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._shared_lock = threading.Lock()

    def _save(self, name: str, content: Any) -> str:
        """One PUT of the whole file: uploads are at most MAX_UPLOAD_BYTES and models'
        files well under S3's 5 GB single-request limit, so the transfer manager (and its
        multipart machinery, a few ms per call) is not needed."""
        cleaned = clean_name(name)
        key = self._normalize_name(cleaned)
        params = self._get_write_parameters(key, content)
        if is_seekable(content):
            content.seek(0)
        self.connection.meta.client.put_object(Bucket=self.bucket_name, Key=key, Body=content.read(), **params)
        return str(cleaned)

    def read_bytes(self, name: str) -> bytes:
        """The object's bytes in one GET; ``FileNotFoundError`` when there is none."""
        key = self._normalize_name(name)
        try:
            response = self.connection.meta.client.get_object(Bucket=self.bucket_name, Key=key)
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(f"File does not exist: {name}") from error
            raise
        content: bytes = response["Body"].read()
        return content

    def presigned_put(
        self, name: str, *, content_type: str, size_bytes: int, expires_seconds: int, endpoint_url: str = ""
    ) -> str:
        """A URL that lets its holder PUT exactly ``size_bytes`` of ``content_type`` to
        ``name`` once, until it expires: both headers are signed (SigV4), so the store refuses
        any other length or type, and so is ``If-None-Match: *``, so the store refuses to
        replace an object already there (412). Computed locally (no request);
        ``endpoint_url``: the address clients reach, when it is not the one this process uses."""
        params = {"Bucket": self.bucket_name, "Key": self._normalize_name(name)}
        params |= {"ContentType": content_type, "ContentLength": size_bytes, "IfNoneMatch": "*"}
        url: str = self._signer(endpoint_url or self.endpoint_url).generate_presigned_url(
            "put_object", Params=params, ExpiresIn=expires_seconds, HttpMethod="PUT"
        )
        return url

    def _signer(self, endpoint_url: str) -> Any:
        # Its own client, built once per endpoint: SigV4 always (a presigned URL of the
        # default client can be SigV2, which signs neither the length nor, as a header, the type).
        with self._shared_lock:
            if endpoint_url not in self._signers:
                config = self.client_config.merge(
                    Config(s3={"addressing_style": self.addressing_style}, signature_version="s3v4")
                )
                self._signers[endpoint_url] = boto3.session.Session().client(
                    "s3",
                    endpoint_url=endpoint_url,
                    region_name=self.region_name,
                    aws_access_key_id=self.access_key,
                    aws_secret_access_key=self.secret_key,
                    config=config,
                )
            return self._signers[endpoint_url]

    def read_head(self, name: str, length: int) -> tuple[bytes, int]:
        """The first ``length`` bytes of the object and its whole size, in one ranged GET
        (no HEAD first); ``FileNotFoundError`` when there is none."""
        key = self._normalize_name(name)
        try:
            response = self.connection.meta.client.get_object(
                Bucket=self.bucket_name, Key=key, Range=f"bytes=0-{length - 1}"
            )
        except ClientError as error:
            if _missing(error):
                raise FileNotFoundError(f"File does not exist: {name}") from error
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416:  # an empty object
                return b"", 0
            raise
        content: bytes = response["Body"].read()
        # "bytes 0-65535/1048576"; a whole object answered without a range has none.
        total = str(response.get("ContentRange", "")).rpartition("/")[2]
        return content, int(total) if total.isdigit() else int(response["ContentLength"])

    def listed(self, prefix: str) -> Iterator[tuple[str, datetime]]:
        """Each object under ``prefix``: its name and when it was last written."""
        paginator = self.connection.meta.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=self._normalize_name(prefix)):
            for entry in page.get("Contents", []):
                yield entry["Key"], entry["LastModified"]
