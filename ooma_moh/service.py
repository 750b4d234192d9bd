"""The rules of ooma-moh: what an upload must satisfy, and what each operation changes.

:class:`MohService` takes its collaborators (catalog, blob store, converter, clock) in its
constructor, so these rules are tested without ffmpeg or disk, and each edge is tested for real.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Protocol

from . import beds, metrics
from . import disclaimer as disclaimer_text
from .config import Settings
from .errors import DisclaimerRequired, MediaToolError, NoSuchDraft, NoTenantFile, NothingToRestore, TooManyDrafts
from .intake import clean_original_name, opened, stage
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
from .storage import Blobs, Catalog
from .storage.blobs import storage_errors

log = logging.getLogger(__name__)


class Converter(Protocol):
    """Validates an upload and writes its renditions (see :mod:`ooma_moh.media`)."""

    def convert(self, source: Path, workdir: Path) -> Conversion:
        """Validate ``source``; write its renditions under ``workdir``."""


class Mixer(Protocol):
    """Puts music under a voice (see :mod:`ooma_moh.media`)."""

    def mix(self, voice: Path, beds: list[tuple[Path, tuple[str, ...]]], out_wav: Path, bed_level_db: float) -> None:
        """Put the music ``beds`` (files with their ffmpeg input options) under ``voice`` (an
        upload, decoded as :meth:`convert` decodes one) into the WAV ``out_wav``."""


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


class MohService:
    """Upload, show, list, delete and listen to tenants' music on hold."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        blobs: Blobs,
        converter: Converter,
        clock: Callable[[], datetime] = utcnow,
        mixer: Mixer | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.blobs = blobs
        self.converter = converter
        self.clock = clock
        self.mixer = mixer

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
        with opened(source, self.settings.max_upload_bytes) as (fh, default_name):
            return self._ingest(
                tenant_id, fh, original_name or default_name, accepted_by, disclaimer_version, before_commit
            )

    def _convert(
        self, source: BinaryIO, name: str, work: Path, limit: int | None = None
    ) -> tuple[UploadedFile, tuple[Rendition, ...]]:
        """Stage, validate and convert ``source`` in ``work``; store the original and the
        renditions as blobs (safe from the clean-up while ``work`` is open)."""
        staged = work / "original"
        size, sha = stage(source, staged, limit or self.settings.max_upload_bytes)
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
        with opened(source, self.settings.max_upload_bytes) as (fh, default_name), self.blobs.scratch() as work:
            upload, renditions = self._convert(fh, original_name or default_name, work)
            draft = self._keep_draft(tenant_id, upload, renditions)
        log.info(
            "draft tenant=%s id=%s sha256=%s duration_ms=%d in %.1f s",
            logfmt(tenant_id),
            draft.draft_id,
            upload.sha256,
            upload.duration_ms,
            time.monotonic() - started,
        )
        return draft

    def _keep_draft(self, tenant_id: str, upload: UploadedFile, renditions: tuple[Rendition, ...]) -> Draft:
        expires = upload.uploaded_at + timedelta(seconds=self.settings.draft_ttl_s)
        draft = Draft(secrets.token_hex(8), tenant_id, upload, renditions, expires)
        if not self.catalog.add_draft(draft, self.settings.max_drafts_per_tenant, upload.uploaded_at):
            raise TooManyDrafts(
                f"this tenant already has {self.settings.max_drafts_per_tenant} drafts: save one,"
                f" or wait until one expires ({self.settings.draft_ttl_s / 60:g} minutes after it was made)"
            )
        return draft

    def mix_draft(self, tenant_id: str, draft_id: str, *, bed: str, bed_level_db: float = -18.0) -> Draft:
        """A new draft: the voice of draft ``draft_id`` over music (``bed``: ``default`` or
        ``current``, rules in :mod:`.beds`), analysed and converted like any upload."""
        if self.mixer is None:
            raise MediaToolError("this server was started without a mixer")
        voice = self.draft(tenant_id, draft_id)
        if bed == "current":
            tenant = self.show(tenant_id)
            if tenant.setting is not MohSetting.FILE:
                raise NoTenantFile(
                    "this tenant uses the default music: there is no current file to put under the voice"
                )
            music = [(self.blobs.locate(tenant.rendition("sln16").sha256), beds.FORMATS["sln16"])]
        else:
            music = beds.default_bed(self.settings.music_bed_default)
        started = time.monotonic()
        with self.blobs.scratch() as work:
            mixed = work / "mixed.wav"
            self.mixer.mix(self.blobs.locate(voice.upload.sha256), music, mixed, bed_level_db)
            name = f"{Path(voice.upload.original_name).stem} + music.wav"
            with storage_errors("reading the mix"), open(mixed, "rb") as fh:
                # our own file: as long as the voice allows (max_duration_s), not max_upload_bytes
                upload, renditions = self._convert(fh, name, work, limit=1 << 40)
            draft = self._keep_draft(tenant_id, upload, renditions)
        log.info(
            "mix tenant=%s voice=%s bed=%s draft=%s in %.1f s",
            logfmt(tenant_id),
            draft_id,
            bed,
            draft.draft_id,
            time.monotonic() - started,
        )
        return draft

    def upload_over_music(
        self,
        tenant_id: str,
        voice: Path | BinaryIO,
        *,
        bed: str,
        bed_level_db: float,
        accept_disclaimer: bool,
        accepted_by: str,
        original_name: str | None = None,
    ) -> TenantMoh:
        """``voice`` over music made the tenant's file in one command (``upload --bed``): a draft
        of the voice, its mix, the mix saved; the voice's draft is dropped whatever happens."""
        self._accepting(tenant_id, accept_disclaimer, accepted_by)  # before anything is read
        spoken = self.make_draft(tenant_id, voice, original_name)
        try:
            mixed = self.mix_draft(tenant_id, spoken.draft_id, bed=bed, bed_level_db=bed_level_db)
        finally:
            self.catalog.drop_draft(tenant_id, spoken.draft_id)
        return self.save_draft(tenant_id, mixed.draft_id, accept_disclaimer=True, accepted_by=accepted_by)

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
