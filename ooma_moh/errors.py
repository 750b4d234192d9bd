"""Errors raised by ooma-moh.

Every error a user or operator can cause is an :class:`OomaMohError` with a one-line,
specific message; the CLI prints that line and exits non-zero. The tree::

    OomaMohError
    ├── InvalidTenantId        the tenant id is not ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$
    ├── InvalidActor           who accepted the disclaimer is empty, too long or not printable
    ├── ConfigError            a setting has an invalid value
    ├── DisclaimerRequired     an upload without the rights disclaimer
    ├── UploadRejected         the file is not acceptable (size, format, duration, damage)
    ├── NoTenantFile           the tenant is on default music (nothing to listen to)
    ├── NoSuchDraft            no such draft for this tenant (never made, expired or saved)
    ├── TooManyDrafts          the tenant holds max_drafts_per_tenant drafts already
    ├── NothingToRestore       no previous file to restore
    ├── BedUnavailable         the default music to put under a voice cannot be read
    ├── MediaToolError         ffmpeg is missing or failed on our own, already-valid data
    ├── StorageError           the server's own storage failed (disk full, permissions, a
    │   │                      stored file missing or damaged): never the uploader's fault
    │   └── CatalogMissing     the catalog is missing or empty while the blob store holds files
    ├── ClassTaken             a tenant's class is held by a realtime row ooma-moh did not write
    ├── OutputError            a file the operator asked for could not be written
    │   └── WouldOverwrite     it exists already, and replacing it was not asked for
    └── AsteriskError          Asterisk could not be reached or refused a command
        ├── AriRequestFailed   ARI answered with an error status (carries .status)
        └── ReloadPending      files were written but Asterisk has not reloaded them yet

Errors from libraries underneath (sqlite3, subprocess, aiohttp) are translated into these at
the one module that talks to that library.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable

from .logsafe import printable
from .rejections import Rejection


class OomaMohError(Exception):
    """Base of every error ooma-moh raises on purpose."""


class InvalidTenantId(OomaMohError, ValueError):
    """A tenant id that does not match the allowed pattern."""


class InvalidActor(OomaMohError, ValueError):
    """A disclaimer acceptor (``--by``) that is empty, too long, or not printable text."""


class ConfigError(OomaMohError, ValueError):
    """A configuration value that cannot be used."""


class DisclaimerRequired(OomaMohError):
    """An upload was attempted without accepting the rights disclaimer."""


class NoLongerAuthorised(OomaMohError):
    """The credentials an upload came with were revoked or ended before it was stored."""


class UploadRejected(OomaMohError):
    """An uploaded file was refused for ``rejection`` (:mod:`ooma_moh.rejections` lists them all);
    ``reason`` is its code."""

    def __init__(self, rejection: Rejection, message: str) -> None:
        super().__init__(message)
        self.rejection = rejection
        self.reason: str = rejection.value


class NoTenantFile(OomaMohError, LookupError):
    """The tenant has no uploaded file (it uses the platform default music)."""


class NoSuchDraft(OomaMohError, LookupError):
    """The tenant has no such draft: never made, another tenant's, expired, or already saved."""


class TooManyDrafts(OomaMohError):
    """The tenant already holds as many drafts as ``max_drafts_per_tenant`` allows."""


class NothingToRestore(OomaMohError, LookupError):
    """The tenant has no previous file to restore."""


class BedUnavailable(OomaMohError):
    """The music to put under a voice (``music_bed_default``) is missing or unreadable: the
    operator's configuration, not the admin's file."""


class MediaToolError(OomaMohError):
    """ffmpeg is unavailable or failed on data that had already been validated."""


class StorageError(OomaMohError):
    """The server could not use its own storage. ``reason`` is a short machine-readable code;
    the message names the problem and the step, never an internal path (uploaders see it)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason

    #: errno -> (reason, what the operator should read)
    ERRNOS = {
        errno.ENOSPC: ("disk_full", "the server's disk is full"),
        errno.EDQUOT: ("disk_full", "the server's disk quota is exhausted"),
        errno.EACCES: ("permission", "permission denied on the server's data directory"),
        errno.EPERM: ("permission", "permission denied on the server's data directory"),
        errno.EROFS: ("read_only", "the server's data directory is read-only"),
        errno.EIO: ("io_error", "an input/output error on the server's disk"),
    }

    @classmethod
    def from_errno(cls, number: int | None, doing: str) -> StorageError:
        """The error for an OS failure ``number`` that happened while ``doing`` something."""
        reason, text = cls.ERRNOS.get(number or 0, ("storage_error", "a storage error on the server"))
        return cls(reason, f"{text} (while {doing}); nothing was changed")


class CatalogMissing(StorageError):
    """The catalog file is missing, empty or not a catalog, but the blob store holds files: it
    was probably lost or replaced. Refusing to start protects those files (a new, empty catalog
    would let clean-up delete them all)."""

    def __init__(self, message: str) -> None:
        super().__init__("catalog_missing", message)


class OutputError(OomaMohError):
    """A file the operator asked ooma-moh to write (e.g. ``asterisk-conf --dest``) could not be."""


class WouldOverwrite(OutputError, FileExistsError):
    """Writing would replace files that exist already, and the operator did not ask for that."""


class AsteriskError(OomaMohError):
    """Asterisk could not be reached, or refused what we asked."""


class ReloadPending(AsteriskError):
    """Configuration was written, but Asterisk has not reloaded it yet; ``report`` says what
    the sync did."""

    def __init__(self, message: str, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class AriRequestFailed(AsteriskError):
    """ARI answered a request with an error status."""

    def __init__(self, method: str, path: str, status: int, message: str) -> None:
        super().__init__(f"ARI {method} {path} failed with {status}: {message}")
        self.status = status


class ClassTaken(OomaMohError):
    """A class ooma-moh would publish is held by a realtime row that it did not write; that row
    is left alone. ``names`` are the classes."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(names)
        shown = ", ".join(printable(n, 80) for n in self.names[:5]) + (" ..." if len(self.names) > 5 else "")
        super().__init__(
            f"{shown}: the realtime database (OOMA_MOH_REALTIME_DB) has a row of that name that ooma-moh"
            " did not write; it is left alone and the tenant's class is not published (remove or rename"
            " that row; if an ooma-moh with another moh_dir wrote it, delete it and sync again)"
        )


def upload_outcome(exc: BaseException | None) -> tuple[str, str | None]:
    """How an upload ended, as the metrics and the log line name it: (result, reason code).
    ``exc`` None: accepted."""
    if exc is None:
        return "ok", None
    if isinstance(exc, UploadRejected):
        return "rejected", exc.reason
    if isinstance(exc, DisclaimerRequired):
        return "disclaimer_required", None
    if isinstance(exc, NoLongerAuthorised):
        return "unauthorized", None
    if isinstance(exc, StorageError):
        return "server_error", exc.reason
    if isinstance(exc, OomaMohError) and isinstance(exc, ValueError):  # tenant id, who accepted
        return "invalid", None
    return "server_error", None


def sync_failure(exc: BaseException) -> str:
    """The reason code of a failed sync, as the metrics and the log line name it."""
    if isinstance(exc, ReloadPending):
        return "reload_pending"
    if isinstance(exc, ClassTaken):
        return "classes_refused"
    if isinstance(exc, StorageError):
        return exc.reason
    return "asterisk" if isinstance(exc, AsteriskError) else "error"
