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
    ├── MediaToolError         ffmpeg is missing or failed on our own, already-valid data
    ├── StorageError           the server's own storage failed (disk full, permissions, a
    │   │                      stored file missing or damaged): never the uploader's fault
    │   └── CatalogMissing     the catalog is missing or empty while the blob store holds files
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


class UploadRejected(OomaMohError):
    """An uploaded file was refused for ``rejection`` (:mod:`ooma_moh.rejections` lists them all);
    ``reason`` is its code."""

    def __init__(self, rejection: Rejection, message: str) -> None:
        super().__init__(message)
        self.rejection = rejection
        self.reason: str = rejection.value


class NoTenantFile(OomaMohError, LookupError):
    """The tenant has no uploaded file (it uses the platform default music)."""


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
