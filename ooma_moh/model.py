"""The domain of ooma-moh as plain, immutable data. No I/O happens here.

A *tenant* is one business account. Its MOH *setting* is either ``default`` (its callers hear the
platform's ``default`` class) or ``file`` (they hear the one file the tenant uploaded). An upload is
kept as the *original* plus one *rendition* per format Asterisk streams without transcoding; all of
them are identified by the sha256 of their bytes. Each tenant on ``file`` has one musiconhold
*class*, named ``<prefix><tenant id>``.
"""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .errors import InvalidActor, InvalidTenantId

TENANT_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
CLASS_PREFIX_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,15}")
ENDPOINT_PATTERN = re.compile(r"[A-Za-z0-9]{1,16}/[A-Za-z0-9][A-Za-z0-9_.+@-]{0,127}")
DEFAULT_CLASS = "default"
#: Channel variables, the contract with the provider's dialplan and ARI application:
#: the call's tenant (set by the provider), the class the AGI route chose (for the dialplan), and
#: the class of a hold in progress (set on the holder by the ARI handler, read back after a restart).
TENANT_VARIABLE = "OOMA_MOH_TENANT"
CLASS_VARIABLE = "OOMA_MOH_CLASS"
HOLD_VARIABLE = "OOMA_MOH_HOLD"


def validate_tenant_id(value: object) -> str:
    """Return ``value`` if it is a valid tenant id, else raise :class:`InvalidTenantId`.

    Tenant ids end up in file names, SQL rows and Asterisk class names, so the pattern is strict:
    an ASCII letter or digit, then up to 63 letters, digits, ``_`` or ``-``.
    """
    if not isinstance(value, str) or TENANT_ID_PATTERN.fullmatch(value) is None:
        raise InvalidTenantId(
            f"invalid tenant id {value!r}: use 1-64 characters A-Z a-z 0-9 _ -, starting with a letter or digit"
        )
    return value


MAX_ACTOR_CHARS = 128


def validate_actor(value: object) -> str:
    """Return ``value`` if it can name who accepted the disclaimer, else raise ``InvalidActor``.

    It is shown in ``show`` and audit records, so it must be one line of printable text (no
    control characters or terminal escapes that could forge lines), not blank, and bounded.
    """
    if not isinstance(value, str) or not value.strip():
        raise InvalidActor("who accepted the disclaimer must be named (--by): it is empty")
    if len(value) > MAX_ACTOR_CHARS:
        raise InvalidActor(
            f"who accepted the disclaimer (--by) is {len(value):,} characters long;"
            f" at most {MAX_ACTOR_CHARS} are allowed"
        )
    if not value.isprintable():
        raise InvalidActor(
            "who accepted the disclaimer (--by) contains control characters; use printable text on one line"
        )
    return value.strip()


def validate_endpoint(value: object) -> str:
    """Return ``value`` if it looks like an Asterisk endpoint (``TECH/resource``), else raise."""
    if not isinstance(value, str) or ENDPOINT_PATTERN.fullmatch(value) is None:
        raise InvalidTenantId(f"invalid endpoint {value!r}: expected TECH/resource, e.g. PJSIP/acme-100")
    return value


def endpoint_of_channel(channel_name: str) -> str | None:
    """``PJSIP/acme-100-0000002a`` -> ``PJSIP/acme-100``; None for names without that suffix
    (Local, Announcer, ... channels)."""
    match = re.fullmatch(r"([A-Za-z0-9]+/.+)-[0-9a-f]{8}", channel_name)
    return match.group(1) if match else None


def is_tenant_class(name: str, prefix: str) -> bool:
    """Whether a musiconhold class is one of ours (``<prefix><tenant id>``): the only classes
    ooma-moh ever publishes, changes or withdraws."""
    return name.startswith(prefix) and TENANT_ID_PATTERN.fullmatch(name[len(prefix) :]) is not None


def moh_class_name(tenant_id: str, prefix: str = "tenant-") -> str:
    """The musiconhold class of a tenant on ``file``: ``<prefix><tenant id>``."""
    return prefix + validate_tenant_id(tenant_id)


class MohSetting(str, enum.Enum):
    """What a tenant's callers hear on hold."""

    DEFAULT = "default"
    FILE = "file"


@dataclass(frozen=True)
class RenditionFormat:
    """One audio format Asterisk can stream natively, identified by its file extension."""

    extension: str
    sample_rate: int
    codec: str
    muxer: str
    bytes_per_sample: float

    def expected_bytes(self, samples: int) -> int:
        """Size in bytes of ``samples`` samples in this format."""
        return int(samples * self.bytes_per_sample)


#: The renditions produced for every upload. Asterisk picks among files sharing a base name.
RENDITION_FORMATS: tuple[RenditionFormat, ...] = (
    RenditionFormat("sln", 8000, "pcm_s16le", "s16le", 2),
    RenditionFormat("sln16", 16000, "pcm_s16le", "s16le", 2),
    RenditionFormat("ulaw", 8000, "pcm_mulaw", "mulaw", 1),
    RenditionFormat("alaw", 8000, "pcm_alaw", "alaw", 1),
    RenditionFormat("g722", 16000, "adpcm_g722", "g722", 0.5),
)
FORMATS_BY_EXTENSION = {f.extension: f for f in RENDITION_FORMATS}


@dataclass(frozen=True)
class Rendition:
    """One converted file of an upload."""

    extension: str
    sample_rate: int
    size: int
    sha256: str


@dataclass(frozen=True)
class UploadedFile:
    """The original file a tenant uploaded, as received."""

    original_name: str
    size: int
    sha256: str
    duration_ms: int
    container: str
    uploaded_at: datetime
    #: what the conversion's analysis found (docs/http.md, "Analysis"); None for files converted
    #: before analyses were recorded
    analysis: dict[str, Any] | None = None


@dataclass(frozen=True)
class Disclaimer:
    """Who accepted the rights disclaimer, when, and for which exact file."""

    accepted_by: str
    accepted_at: datetime
    sha256: str
    #: the version of the disclaimer text that was accepted (:data:`ooma_moh.disclaimer.VERSION`);
    #: None for uploads made before versions were recorded
    text_version: str | None = None


@dataclass(frozen=True)
class TenantMoh:
    """Everything the catalog knows about one tenant's music on hold."""

    tenant_id: str
    setting: MohSetting
    upload: UploadedFile | None = None
    disclaimer: Disclaimer | None = None
    renditions: tuple[Rendition, ...] = ()
    updated_at: datetime | None = None
    #: the file the last change replaced or removed, kept so that it can be restored
    previous: UploadedFile | None = None

    def moh_class(self, prefix: str) -> str:
        """The class a held caller of this tenant should hear."""
        if self.setting is MohSetting.FILE:
            return moh_class_name(self.tenant_id, prefix)
        return DEFAULT_CLASS

    @property
    def version(self) -> str:
        """Short content id of the tenant's renditions: a new file gives a new version, the same
        file the same one (so a re-sync of unchanged music writes nothing)."""
        return version_of_content(
            "\n".join(f"{r.extension}:{r.sha256}" for r in sorted(self.renditions, key=lambda r: r.extension))
        )

    def rendition(self, extension: str) -> Rendition:
        """The rendition with ``extension``; ``KeyError`` if absent."""
        return find_rendition(self.renditions, extension)


def find_rendition(renditions: tuple[Rendition, ...], extension: str) -> Rendition:
    """The rendition with ``extension``; ``KeyError`` if absent."""
    for rendition in renditions:
        if rendition.extension == extension:
            return rendition
    raise KeyError(extension)


def version_of_content(lines: str) -> str:
    """A tenant's version from its renditions as ``extension:sha256`` lines sorted by extension
    (the catalog database computes the same lines to tell which nodes are behind)."""
    digest = hashlib.sha256()
    for line in lines.splitlines():
        digest.update(f"{line}\n".encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class Draft:
    """An upload converted and analysed but not saved: the admin listens to it first. It never
    changes what callers hear; saving it makes it the tenant's file (docs/http.md, "Drafts")."""

    draft_id: str
    tenant_id: str
    upload: UploadedFile
    renditions: tuple[Rendition, ...]
    expires_at: datetime

    def rendition(self, extension: str) -> Rendition:
        """The rendition with ``extension``; ``KeyError`` if absent."""
        return find_rendition(self.renditions, extension)
