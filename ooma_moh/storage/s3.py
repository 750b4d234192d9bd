"""Blobs in S3-compatible object storage (``OOMA_MOH_BLOB_URL=s3://bucket/prefix``), shared by
every host, with the local blob directory as a content-addressed cache in front of it.

Objects are named by their sha256 (``<prefix>/<sha[:2]>/<sha>``) and never change. Every object
that reaches the local cache is downloaded to a scratch file, checked against its sha256, and only
then moved into place: a cut download, a damaged object or a stale cache never becomes a file
Asterisk can see. Deletion keeps the two-step rule of the local store: :meth:`collect` moves an
unreferenced object under ``<prefix>/trash/`` and deletes it ``grace_s`` after; a trashed object
that is referenced again (a restored catalog) comes back on first use. Endpoint and credentials
come from the standard AWS variables (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_CA_BUNDLE`` for a private CA) or the
``s3_endpoint_url`` and ``s3_addressing_style`` settings; boto3 retries transient failures with
backoff.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import boto3.exceptions
import botocore.exceptions
from botocore.config import Config

from ..errors import ConfigError, StorageError
from .base import Fetcher
from .blobs import CHUNK, BlobStore, sha256_file, storage_errors, sync_filesystem

#: how old an unreferenced object must be before the clean-up trashes it: an upload in progress
#: has stored its objects but not yet committed the catalog
MIN_AGE_S = 3600.0
#: tries of one download whose transfer is cut mid-way (as boto3's transfer manager does)
ATTEMPTS = 5
#: what a transfer cut mid-way raises while its body is read
CUT = (
    botocore.exceptions.ResponseStreamingError,
    botocore.exceptions.IncompleteReadError,
    botocore.exceptions.ReadTimeoutError,
    botocore.exceptions.ConnectionClosedError,
)


def parse_blob_url(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> (bucket, prefix without slashes)."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise ConfigError(f"blob_url {url!r} must read s3://bucket[/prefix]")
    return parts.netloc, parts.path.strip("/")


@contextlib.contextmanager
def s3_errors(doing: str) -> Iterator[None]:
    """boto3 failures as :class:`StorageError`, worded as the server's problem."""
    try:
        yield
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
            raise StorageError(
                "permission",
                f"the object storage refused access (while {doing}): check the credentials; nothing was changed",
            ) from None
        if code in ("NoSuchBucket",):
            raise StorageError(
                "blob_store_missing", f"the object storage bucket does not exist (while {doing}); nothing was changed"
            ) from None
        raise StorageError(
            "blob_store_error", f"the object storage failed (while {doing}: {code}); nothing was changed"
        ) from None
    except boto3.exceptions.RetriesExceededError:  # the transfer manager gave up on a download
        raise StorageError(
            "blob_store_unreachable",
            f"the object storage kept breaking the transfer (while {doing}); nothing was changed",
        ) from None
    except boto3.exceptions.Boto3Error as exc:  # the transfer manager's wrappers (upload failed, …)
        raise StorageError(
            "blob_store_error",
            f"the object storage refused the transfer (while {doing}:"
            f" {str(exc).rsplit(': ', 1)[-1][:120]}); nothing was changed",
        ) from None
    except (botocore.exceptions.BotoCoreError, OSError) as exc:
        raise StorageError(
            "blob_store_unreachable",
            f"the object storage cannot be reached (while {doing}: {type(exc).__name__}); nothing was changed",
        ) from None


class S3BlobStore:
    """The :class:`~ooma_moh.storage.blobs.BlobStore` interface over object storage, with
    ``cache`` (a local BlobStore) holding what this host has used. ``addressing_style``
    (``s3_addressing_style``): ``path`` by default, since most S3-compatible servers (SeaweedFS,
    MinIO) serve no bucket subdomains; ``virtual`` or ``auto`` for those that require them."""

    def __init__(
        self,
        url: str,
        cache: BlobStore,
        *,
        endpoint_url: str | None = None,
        addressing_style: str = "path",
        grace_s: float = 7 * 86400.0,
        client: Any = None,
    ) -> None:
        self.bucket, self.prefix = parse_blob_url(url)
        self.cache = cache
        self.grace_s = grace_s
        self.writable = cache.writable
        self.client = client or boto3.client(
            "s3",
            endpoint_url=endpoint_url or None,
            config=Config(
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                s3={"addressing_style": addressing_style},
                # every object fetched is checked against its sha256 (:meth:`locate`): botocore's
                # own checksum of each response would be a second check, paid per request
                response_checksum_validation="when_required",
            ),
        )

    # -- names ---------------------------------------------------------------------------------
    def key(self, sha256: str) -> str:
        """The object key of a blob."""
        return f"{self.prefix}/{sha256[:2]}/{sha256}".lstrip("/")

    def trash_key(self, sha256: str) -> str:
        return f"{self.prefix}/trash/{sha256}".lstrip("/")

    def _object_exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    # -- the BlobStore interface ---------------------------------------------------------------
    def path(self, sha256: str) -> Path:
        """Where the blob is (or would be) in the local cache."""
        return self.cache.path(sha256)

    def exists(self, sha256: str) -> bool:
        with s3_errors("looking for a stored file"):
            return self._object_exists(self.key(sha256))

    def holds_files(self) -> bool:
        """Whether the bucket prefix (stored or trashed) or the local cache holds any blob."""
        with s3_errors("listing the object storage"):
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/".lstrip("/"), MaxKeys=1)
        return bool(page.get("KeyCount")) or self.cache.holds_files()

    @property
    def scratch_root(self) -> Path:
        """Where scratch directories are (the local cache's)."""
        return self.cache.scratch_root

    def stored(self) -> set[str]:
        """The sha256 of every object under the prefix (trashed ones not included)."""
        with s3_errors("listing the object storage"):
            return {
                key.rsplit("/", 1)[-1]
                for obj in self._objects(f"{self.prefix}/".lstrip("/"))
                if (key := obj["Key"]).rsplit("/", 2)[-2] != "trash"
            }

    def scratch(self) -> contextlib.AbstractContextManager[Path]:
        """A private local scratch directory (uploads are staged and converted locally)."""
        return self.cache.scratch()

    def reclaim_scratch(self) -> None:
        self.cache.reclaim_scratch()

    def put(self, source: Path) -> tuple[str, int]:
        """Store ``source`` (in the scratch area) in the object storage, then in the local cache."""
        sha = sha256_file(source)
        with s3_errors("storing the renditions"):
            if not self._object_exists(self.key(sha)):
                self.client.upload_file(str(source), self.bucket, self.key(sha))
        return self.cache.put(source)

    def locate(self, sha256: str) -> Path:
        """The local path of a blob, downloaded (and checked) into the cache if it is not there:
        one GET of its key (a HEAD first would double the requests a cold node's catch-up waits
        on); only if that is missing, one GET of its trashed copy, which a writable store then
        brings back under its key. The copy is fsynced before it has a name in the cache."""
        local = self.cache.path(sha256)
        if local.is_file():
            return local
        with s3_errors("fetching a stored file"), self.cache.scratch_file() as partial:
            self._fetch_into(sha256, partial, durable=True)
            self.cache.put(partial, sha256=sha256, cached=True)
        return local

    @contextlib.contextmanager
    def fetching(self) -> Iterator[Fetcher]:
        """A :class:`Fetcher` whose downloads wait in a scratch directory, not fsynced, until
        :meth:`Fetcher.settle` makes all of them durable in one commit of the file system and
        moves them into the cache: a catch-up of thousands of objects is not a commit per object."""
        with self.cache.scratch() as work:
            yield _Fetcher(self, work)

    def _fetch_into(self, sha256: str, dest: Path, *, durable: bool) -> None:
        """Download the blob (or its trashed copy) into ``dest`` and check it (rules of
        :meth:`locate`); ``durable``: fsynced."""
        digest = self._download(self.key(sha256), dest, durable)
        if digest is None:
            trashed = self.trash_key(sha256)
            digest = self._download(trashed, dest, durable)
            if digest is None:
                raise StorageError(
                    "blob_missing",
                    f"a stored file is missing from the object storage (sha256"
                    f" {sha256[:16]}…): restore the bucket from a backup",
                )
            if self.writable:  # referenced again (a restored catalog): bring it back
                self.client.copy_object(
                    Bucket=self.bucket, Key=self.key(sha256), CopySource={"Bucket": self.bucket, "Key": trashed}
                )
        if digest != sha256:
            raise StorageError(
                "blob_damaged",
                f"a stored file is damaged in the object storage (sha256"
                f" {sha256[:16]}… does not match): restore it from a backup",
            )

    def _download(self, key: str, dest: Path, durable: bool) -> str | None:
        """GET ``key`` into ``dest`` (fsynced if ``durable``); its sha256 as it streams, or None
        if there is no such object. A transfer cut mid-way is tried again from the start
        (:data:`ATTEMPTS` in all)."""
        attempt = 1
        while True:
            try:
                body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
            except botocore.exceptions.ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                    return None
                raise
            digest = hashlib.sha256()
            try:
                with body, open(dest, "wb") as fh:
                    for chunk in body.iter_chunks(CHUNK):
                        digest.update(chunk)
                        fh.write(chunk)
                    if durable:
                        fh.flush()
                        os.fsync(fh.fileno())
            except CUT:
                if attempt == ATTEMPTS:
                    raise
                attempt += 1
                continue
            return digest.hexdigest()

    def read(self, sha256: str) -> bytes:
        """The bytes of a blob, checked against its sha256."""
        self.locate(sha256)
        return self.cache.read(sha256)

    def collect(self, referenced: Callable[[], set[str]], now: float | None = None) -> int:
        """Trash unreferenced objects older than :data:`MIN_AGE_S`, delete those trashed
        ``grace_s`` ago, bring back trashed ones referenced again; then the local cache's own
        clean-up. Returns the number of objects moved to the trash."""
        now = time.time() if now is None else now
        keep = referenced()
        moved = 0
        with s3_errors("cleaning up unused files"):
            for obj in self._objects(f"{self.prefix}/".lstrip("/")):
                parts = obj["Key"].rsplit("/", 2)
                sha, age = parts[-1], now - obj["LastModified"].timestamp()
                if parts[-2] == "trash":
                    if sha in keep:
                        self.client.copy_object(
                            Bucket=self.bucket, Key=self.key(sha), CopySource={"Bucket": self.bucket, "Key": obj["Key"]}
                        )
                        self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
                    elif age >= self.grace_s:
                        self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
                elif sha not in keep and age >= MIN_AGE_S:
                    self.client.copy_object(
                        Bucket=self.bucket,
                        Key=self.trash_key(sha),
                        CopySource={"Bucket": self.bucket, "Key": obj["Key"]},
                    )
                    self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])
                    moved += 1
        self.cache.collect(lambda: keep, now)
        return moved

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", [])


class _Fetcher:
    """:meth:`S3BlobStore.fetching`'s downloads, in ``work`` (a scratch directory: the store's
    clean-up leaves it alone while it exists) until settled."""

    def __init__(self, store: S3BlobStore, work: Path) -> None:
        self.store, self.work = store, work
        self._fetched: list[str] = []  # downloaded, not settled
        self._lock = threading.Lock()

    def fetch(self, sha256: str) -> None:
        if self.store.cache.path(sha256).is_file():
            return
        with s3_errors("fetching a stored file"):
            self.store._fetch_into(sha256, self.work / sha256, durable=False)
        with self._lock:
            self._fetched.append(sha256)

    def settle(self) -> None:
        with self._lock:
            fetched, self._fetched = self._fetched, []
        if not fetched:
            return
        with storage_errors("storing the fetched files"):
            sync_filesystem(self.work)
        for sha256 in fetched:
            self.store.cache.put(self.work / sha256, sha256=sha256, cached=True)
