"""The media storage of ``MEDIA_STORAGE=s3``: django-storages' S3 backend with one boto3
connection per process instead of one per thread, and a one-request read.

Under ASGI each request runs its synchronous part in a new thread; django-storages keeps
its boto3 session and resource in a thread-local, so every upload would build a new one
(loading boto3's service models again, tens of milliseconds of CPU). The boto3 client
underneath is thread-safe, so the process shares one. ``read_bytes`` fetches an object
with a single GET (``open()`` does a HEAD, then the GET); a save is a single PUT. docs/operations/object-storage.md.
"""

from __future__ import annotations

import threading
from typing import Any

from botocore.exceptions import ClientError
from storages.backends.s3 import S3Storage  # type: ignore[import-untyped]  # django-storages ships no types
from storages.utils import clean_name, is_seekable  # type: ignore[import-untyped]


class S3MediaStorage(S3Storage):  # type: ignore[misc]
    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._shared_lock = threading.Lock()
        self._shared_connection: Any = None

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
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(f"File does not exist: {name}") from error
            raise
        content: bytes = response["Body"].read()
        return content
