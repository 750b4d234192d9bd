"""Errors raised by ooma-moh.

Every error a user or operator can cause is an :class:`OomaMohError` with a one-line,
specific message; the CLI prints that line and exits non-zero. The tree::

    OomaMohError
    ├── InvalidTenantId        the tenant id is not ^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$
    ├── ConfigError            a setting has an invalid value
    ├── DisclaimerRequired     an upload without the rights disclaimer
    ├── UploadRejected         the file is not acceptable (size, format, duration, damage)
    ├── NoTenantFile           the tenant is on default music (nothing to listen to)
    ├── MediaToolError         ffmpeg is missing or failed on our own, already-valid data
    └── AsteriskError          Asterisk could not be reached or refused a command
        ├── AriRequestFailed   ARI answered with an error status (carries .status)
        └── ReloadPending      files were written but Asterisk has not reloaded them yet

Errors from libraries underneath (sqlite3, subprocess, aiohttp) are translated into these at
the one module that talks to that library.
"""

from __future__ import annotations


class OomaMohError(Exception):
    """Base of every error ooma-moh raises on purpose."""


class InvalidTenantId(OomaMohError, ValueError):
    """A tenant id that does not match the allowed pattern."""


class ConfigError(OomaMohError, ValueError):
    """A configuration value that cannot be used."""


class DisclaimerRequired(OomaMohError):
    """An upload was attempted without accepting the rights disclaimer."""


class UploadRejected(OomaMohError):
    """An uploaded file was refused; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class NoTenantFile(OomaMohError, LookupError):
    """The tenant has no uploaded file (it uses the platform default music)."""


class MediaToolError(OomaMohError):
    """ffmpeg is unavailable or failed on data that had already been validated."""


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
