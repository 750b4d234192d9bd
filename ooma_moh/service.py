"""The rules of ooma-moh: what an upload must satisfy, and what each operation changes.

:class:`MohService` takes its collaborators (catalog, blob store, converter, clock) in its
constructor, so these rules are tested without ffmpeg or disk, and each edge is tested for real.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

from . import disclaimer as disclaimer_text
from . import metrics
from .config import Settings
from .errors import DisclaimerRequired, NoSuchDraft, NoTenantFile, NothingToRestore, TooManyDrafts, UploadRejected
from .logsafe import logfmt
from .media_rules import Conversion
from .model import (
    FORMATS_BY_EXTENSION,
    Disclaimer,
    Draft,
    MohSetting,
    Rendition,
    TenantMoh,
    UploadedFile,
    validate_actor,
    validate_tenant_id,
)
from .rejections import Rejection
from .storage import Blobs, Catalog
from .storage.blobs import storage_errors

log = logging.getLogger(__name__)
MAX_NAME_CHARS = 255
CHUNK = 1 << 16


class Converter(Protocol):
    """Validates an upload and writes its renditions (see :mod:`ooma_moh.media`)."""

    def convert(self, source: Path, workdir: Path) -> Conversion:
        """Validate ``source``; write its renditions under ``workdir``."""


def _read(source: BinaryIO, size: int) -> bytes:
    """Read from the uploader's stream: a failure there is the upload's, not the server's."""
    try:
        return source.read(size)
    except OSError as exc:
        raise UploadRejected(Rejection.UNREADABLE, f"the upload could not be read: {exc.strerror}") from None


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def clean_original_name(name: str) -> str:
    """The uploaded file's name as a record: base name only, no control characters, bounded."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in base if ch.isprintable())
    return printable[:MAX_NAME_CHARS] or "upload"


class MohService:
    """Upload, show, list, delete and listen to tenants' music on hold."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        blobs: Blobs,
        converter: Converter,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.blobs = blobs
        self.converter = converter
        self.clock = clock

    def _stage(self, source: BinaryIO, target: Path) -> tuple[int, str]:
        """Copy at most ``max_upload_bytes`` of ``source`` to ``target``; return size and sha256."""
        limit = self.settings.max_upload_bytes
        digest = hashlib.sha256()
        size = 0
        with storage_errors("receiving the upload"), open(target, "wb") as out:
            while chunk := _read(source, min(CHUNK, limit + 1 - size)):
                size += len(chunk)
                if size > limit:
                    raise UploadRejected(Rejection.TOO_LARGE, f"the file is larger than the limit of {limit:,} bytes")
                digest.update(chunk)
                out.write(chunk)
        if size == 0:
            raise UploadRejected(Rejection.EMPTY, "the file is empty")
        return size, digest.hexdigest()

    def upload(
        self,
        tenant_id: str,
        source: Path | BinaryIO,
        *,
        accept_disclaimer: bool,
        accepted_by: str,
        original_name: str | None = None,
        disclaimer_version: str | None = disclaimer_text.VERSION,
        before_commit: Callable[[], None] | None = None,
    ) -> TenantMoh:
        """Validate and convert ``source``, then make it the tenant's music in one step.

        ``accepted_by`` names who accepted the rights disclaimer (printable, 1-128 characters),
        ``disclaimer_version`` which text of it they were shown; ``before_commit`` runs after the
        conversion, just before the commit, and may raise to store nothing (the HTTP API checks
        there that the uploader's credentials still hold).
        Nothing changes unless every check and the whole conversion succeed. Counted in
        :mod:`.metrics` and logged in one line (tenant, result, reason or file).
        """
        started = time.monotonic()
        try:
            result = self._upload(
                tenant_id, source, accept_disclaimer, accepted_by, original_name, disclaimer_version, before_commit
            )
        except Exception as exc:
            outcome, reason = metrics.upload_done(exc)
            log.info(
                "upload tenant=%s result=%s reason=%s in %.1f s",
                logfmt(tenant_id),
                outcome,
                logfmt(reason or type(exc).__name__),
                time.monotonic() - started,
            )
            raise
        metrics.upload_done(None)
        up = result.upload
        log.info(
            "upload tenant=%s result=ok sha256=%s bytes=%d duration_ms=%d in %.1f s",
            logfmt(tenant_id),
            up.sha256 if up else "-",
            up.size if up else 0,
            up.duration_ms if up else 0,
            time.monotonic() - started,
        )
        return result

    def _upload(
        self,
        tenant_id: str,
        source: Path | BinaryIO,
        accept_disclaimer: bool,
        accepted_by: str,
        original_name: str | None,
        disclaimer_version: str | None,
        before_commit: Callable[[], None] | None,
    ) -> TenantMoh:
        accepted_by = self._accepting(tenant_id, accept_disclaimer, accepted_by)
        with self._opened(source) as (fh, default_name):
            return self._ingest(
                tenant_id, fh, original_name or default_name, accepted_by, disclaimer_version, before_commit
            )

    @contextlib.contextmanager
    def _opened(self, source: Path | BinaryIO) -> Iterator[tuple[BinaryIO, str]]:
        """The upload as a stream, and the name to record if none is given; a path is checked
        (a readable file within ``max_upload_bytes``) before anything is read."""
        if not isinstance(source, (str, os.PathLike)):
            yield source, "upload"
            return
        path = Path(source)
        try:
            if not path.is_file():
                raise UploadRejected(Rejection.NOT_A_FILE, "the upload is not a readable file")
            if path.stat().st_size > self.settings.max_upload_bytes:
                raise UploadRejected(
                    Rejection.TOO_LARGE,
                    f"the file is larger than the limit of {self.settings.max_upload_bytes:,} bytes",
                )
            fh = open(path, "rb")  # noqa: SIM115 - closed by the with below; the try covers only the opening
        except OSError as exc:
            raise UploadRejected(Rejection.NOT_A_FILE, f"the upload cannot be read: {exc.strerror}") from None
        with fh:
            yield fh, path.name

    def _convert(self, source: BinaryIO, name: str, work: Path) -> tuple[UploadedFile, tuple[Rendition, ...]]:
        """Stage, validate and convert ``source`` in ``work``; store the original and the
        renditions as blobs (safe from the clean-up while ``work`` is open)."""
        staged = work / "original"
        size, sha = self._stage(source, staged)
        with metrics.CONVERSION.time():
            conversion = self.converter.convert(staged, work)
        renditions = []
        for extension, path in sorted(conversion.files.items()):
            blob_sha, blob_size = self.blobs.put(path)
            rate = FORMATS_BY_EXTENSION[extension].sample_rate
            renditions.append(Rendition(extension, rate, blob_size, blob_sha))
        self.blobs.put(staged)
        upload = UploadedFile(
            clean_original_name(name),
            size,
            sha,
            conversion.duration_ms,
            conversion.container,
            self.clock(),
            conversion.analysis or None,
        )
        return upload, tuple(renditions)

    def _ingest(
        self,
        tenant_id: str,
        source: BinaryIO,
        name: str,
        accepted_by: str,
        disclaimer_version: str | None,
        before_commit: Callable[[], None] | None,
    ) -> TenantMoh:
        with self.blobs.scratch() as work:
            upload, renditions = self._convert(source, name, work)
            disclaimer = Disclaimer(accepted_by, upload.uploaded_at, upload.sha256, disclaimer_version)
            if before_commit is not None:
                before_commit()
            result = self.catalog.save_upload(tenant_id, upload, disclaimer, renditions)
        self.collect_garbage()
        return result

    # -- drafts and restore (docs/http.md, "Drafts"; catalog rules in storage/sql_history.py) ------
    def make_draft(self, tenant_id: str, source: Path | BinaryIO, original_name: str | None = None) -> Draft:
        """Validate, convert and analyse ``source`` as an upload does, without the disclaimer and
        without changing what callers hear; ``TooManyDrafts`` beyond ``max_drafts_per_tenant``."""
        validate_tenant_id(tenant_id)
        started = time.monotonic()
        with self._opened(source) as (fh, default_name), self.blobs.scratch() as work:
            upload, renditions = self._convert(fh, original_name or default_name, work)
            expires = upload.uploaded_at + timedelta(seconds=self.settings.draft_ttl_s)
            draft = Draft(secrets.token_hex(8), tenant_id, upload, renditions, expires)
            if not self.catalog.add_draft(draft, self.settings.max_drafts_per_tenant, upload.uploaded_at):
                raise TooManyDrafts(
                    f"this tenant already has {self.settings.max_drafts_per_tenant} drafts: save one,"
                    f" or wait until one expires ({self.settings.draft_ttl_s / 60:g} minutes after it was made)"
                )
        log.info(
            "draft tenant=%s id=%s sha256=%s duration_ms=%d in %.1f s",
            logfmt(tenant_id),
            draft.draft_id,
            upload.sha256,
            upload.duration_ms,
            time.monotonic() - started,
        )
        return draft

    def draft(self, tenant_id: str, draft_id: str) -> Draft:
        """The tenant's live draft; ``NoSuchDraft`` otherwise (another tenant's too)."""
        validate_tenant_id(tenant_id)
        found = self.catalog.draft(tenant_id, draft_id, self.clock())
        if found is None:
            raise NoSuchDraft("no such draft: it expired, was saved, or never existed")
        return found

    def drop_draft(self, tenant_id: str, draft_id: str) -> None:
        """Forget a draft (its files are collected later); ``NoSuchDraft`` if there is none."""
        validate_tenant_id(tenant_id)
        if not self.catalog.drop_draft(tenant_id, draft_id):
            raise NoSuchDraft("no such draft: it expired, was saved, or never existed")

    def save_draft(
        self,
        tenant_id: str,
        draft_id: str,
        *,
        accept_disclaimer: bool,
        accepted_by: str,
        disclaimer_version: str | None = disclaimer_text.VERSION,
        before_commit: Callable[[], None] | None = None,
    ) -> TenantMoh:
        """Make the draft the tenant's file: the checks, record and publication of an upload."""
        accepted_by = self._accepting(tenant_id, accept_disclaimer, accepted_by)
        draft = self.draft(tenant_id, draft_id)
        now = self.clock()
        upload = dataclasses.replace(draft.upload, uploaded_at=now)
        disclaimer = Disclaimer(accepted_by, now, upload.sha256, disclaimer_version)
        if before_commit is not None:
            before_commit()
        result = self.catalog.save_upload(tenant_id, upload, disclaimer, draft.renditions, draft_id=draft_id)
        log.info("upload tenant=%s result=ok draft=%s sha256=%s", logfmt(tenant_id), draft_id, upload.sha256)
        self.collect_garbage()
        return result

    def restore(
        self,
        tenant_id: str,
        *,
        accept_disclaimer: bool,
        accepted_by: str,
        disclaimer_version: str | None = disclaimer_text.VERSION,
    ) -> TenantMoh:
        """Make the previous file current again; ``NothingToRestore`` when there is none."""
        accepted_by = self._accepting(tenant_id, accept_disclaimer, accepted_by)
        tenant = self.show(tenant_id)
        if tenant.previous is None:
            raise NothingToRestore("there is no previous music to restore")
        now = self.clock()
        disclaimer = Disclaimer(accepted_by, now, tenant.previous.sha256, disclaimer_version)
        result = self.catalog.restore_previous(tenant_id, disclaimer, now)
        if result is None:
            raise NothingToRestore("there is no previous music to restore")
        log.info("restore tenant=%s sha256=%s", logfmt(tenant_id), tenant.previous.sha256)
        self.collect_garbage()
        return result

    @staticmethod
    def _accepting(tenant_id: str, accept_disclaimer: bool, accepted_by: str) -> str:
        validate_tenant_id(tenant_id)
        accepted_by = validate_actor(accepted_by)
        if not accept_disclaimer:
            raise DisclaimerRequired(
                "the rights disclaimer must be accepted: confirm you hold the rights to play this"
                " file to callers (--accept-disclaimer); nothing was stored"
            )
        return accepted_by

    def collect_garbage(self) -> int:
        """Forget expired drafts, then move blobs the catalog no longer references to the
        trash; returns how many."""
        self.catalog.drop_expired_drafts(self.clock())
        return self.blobs.collect(self.catalog.referenced_blobs)

    def show(self, tenant_id: str) -> TenantMoh:
        """The tenant's music; an unknown tenant is simply on default music."""
        validate_tenant_id(tenant_id)
        return self.catalog.get(tenant_id) or TenantMoh(tenant_id, MohSetting.DEFAULT)

    def list(self) -> list[TenantMoh]:
        """Every tenant the catalog knows."""
        return self.catalog.list()

    def delete(self, tenant_id: str) -> TenantMoh:
        """Remove the tenant's file: its callers go back to the default music. Idempotent."""
        validate_tenant_id(tenant_id)
        result = self.catalog.set_default(tenant_id, self.clock())
        self.collect_garbage()
        return result or TenantMoh(tenant_id, MohSetting.DEFAULT)

    def rendition_bytes(self, tenant_id: str, extension: str) -> bytes:
        """The bytes of one rendition of the tenant's file."""
        tenant = self.show(tenant_id)
        if tenant.setting is not MohSetting.FILE:
            raise NoTenantFile(f"tenant {tenant_id} uses the platform default music: there is no uploaded file")
        return self.blobs.read(tenant.rendition(extension).sha256)
