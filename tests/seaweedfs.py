"""A real SeaweedFS S3 server for the tests (bin/storage, the script `make storage` and
.ci/run use): the one of the environment when it names one (``MEDIA_STORAGE=s3`` with
``AWS_S3_ENDPOINT_URL``, as .ci/run's storage pass sets), else one started for the test
session on free ports (or ``STORAGE_TEST_PORT`` and the seven from
``STORAGE_TEST_INTERNAL_PORT``) under a temporary directory."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imagerec.storage import LOCAL_ACCESS_KEY_ID, LOCAL_BUCKET, LOCAL_SECRET_ACCESS_KEY, s3_backend

BASE_DIR = Path(__file__).resolve().parent.parent
STORAGE_SCRIPT = BASE_DIR / "bin" / "storage"


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    directory: Path | None = None  # set when this test session started it

    def backend(self) -> dict[str, Any]:
        """The ``STORAGES["default"]`` entry on this server's bucket."""
        return s3_backend(
            endpoint=self.endpoint, bucket=self.bucket, access_key=self.access_key, secret_key=self.secret_key
        )

    def client(self) -> Any:
        """A boto3 S3 client of this server (what a test reads the bucket with)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def env(self) -> dict[str, str]:
        """The environment of a process (a worker, the web server) using this server."""
        return {
            "MEDIA_STORAGE": "s3",
            "AWS_S3_ENDPOINT_URL": self.endpoint,
            "AWS_STORAGE_BUCKET_NAME": self.bucket,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
        }


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_run(length: int) -> int:
    """The first of ``length`` consecutive free loopback ports (SeaweedFS's internal ones)."""
    for _ in range(200):
        base = random.randrange(20000, 40000)
        if all(_free(port) for port in range(base, base + length)):
            return base
    raise RuntimeError(f"no {length} consecutive free ports")


def _env_secret(name: str, default: str) -> str:
    path = os.environ.get(f"{name}_FILE")
    return Path(path).read_text(encoding="utf-8").rstrip("\r\n") if path else os.environ.get(name) or default


def seaweedfs_server(directory: Path) -> Iterator[S3Server]:
    """The environment's S3 server, or a SeaweedFS started in ``directory`` (stopped after)."""
    endpoint = os.environ.get("AWS_S3_ENDPOINT_URL", "")
    if os.environ.get("MEDIA_STORAGE") == "s3" and endpoint:
        yield S3Server(
            endpoint=endpoint,
            bucket=os.environ.get("AWS_STORAGE_BUCKET_NAME") or LOCAL_BUCKET,
            access_key=_env_secret("AWS_ACCESS_KEY_ID", LOCAL_ACCESS_KEY_ID),
            secret_key=_env_secret("AWS_SECRET_ACCESS_KEY", LOCAL_SECRET_ACCESS_KEY),
        )
        return
    # Free ports found by probing, or the ones given (a shared machine with port ranges).
    port = int(os.environ.get("STORAGE_TEST_PORT") or free_port_run(1))
    internal = int(os.environ.get("STORAGE_TEST_INTERNAL_PORT") or free_port_run(7))
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    subprocess.run(
        [sys.executable, str(STORAGE_SCRIPT), "start", "--dir", str(directory), "--port", str(port),
         "--internal-port", str(internal)],
        check=True, env=clean, cwd=BASE_DIR, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield S3Server(
            endpoint=f"http://127.0.0.1:{port}",
            bucket=LOCAL_BUCKET,
            access_key=LOCAL_ACCESS_KEY_ID,
            secret_key=LOCAL_SECRET_ACCESS_KEY,
            directory=directory,
        )
    finally:
        subprocess.run([sys.executable, str(STORAGE_SCRIPT), "stop", "--dir", str(directory)], check=False)
