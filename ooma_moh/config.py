"""Settings, read once: defaults -> TOML file -> environment (``OOMA_MOH_*``) -> flags.

The result is a frozen :class:`Settings` passed down explicitly; nothing deeper in the package
reads the environment. Every field can be set in the TOML file under its own name (top level or
in an ``[ooma_moh]`` table) and in the environment as ``OOMA_MOH_<NAME IN CAPITALS>``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import string
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .model import CLASS_PREFIX_PATTERN

PUBLIC_URL_PATTERN = re.compile(r"https?://[^/\s?#]+(/[^\s?#]*)?")
BLOB_URL_PATTERN = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,62}(/[A-Za-z0-9._/-]*)?")

ENV_PREFIX = "OOMA_MOH_"
CONFIG_ENV = "OOMA_MOH_CONFIG"
PUBLISH_MODES = ("realtime", "static")
LOG_FORMATS = ("text", "json")
S3_ADDRESSING_STYLES = ("path", "virtual", "auto")


def _template_fields(template: str) -> list[str]:
    """The field names of a ``str.format`` template; a malformed one, or a field with a format
    spec or a conversion (``{endpoint:>999999999}`` would build a gigabyte a call), gives ``["?"]``."""
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError:
        return ["?"]
    named = [(name, spec, conversion) for _, name, spec, conversion in fields if name is not None]
    return [name if not spec and conversion is None else "?" for name, spec, conversion in named]


def _default_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "ooma-moh"


@dataclass(frozen=True)
class Settings:
    """All configuration of ooma-moh. Paths left unset derive from ``home``."""

    home: Path = field(default_factory=_default_home)
    max_upload_bytes: int = 5 * 1024 * 1024
    min_duration_s: float = 1.0
    max_duration_s: float = 30 * 60.0
    min_sample_rate: int = 8000
    max_sample_rate: int = 384000
    max_channels: int = 8
    ffmpeg_cpu_s: float = 60.0
    ffmpeg_wall_s: float = 120.0
    ffmpeg_memory_mb: int = 1024
    blob_grace_s: float = 7 * 86400.0
    loudness_lufs: float = -20.0
    true_peak_dbtp: float = -2.0
    #: remove leading and trailing silence (below ``silence_threshold_db``) from the renditions
    trim_silence: bool = True
    #: the level under which audio counts as silence (trimming, ``mostly_silence``), dBFS
    silence_threshold_db: float = -50.0
    #: the end of the renditions crossfaded into their start over this long (0: no crossfade)
    loop_crossfade_ms: int = 250
    #: how long a draft (an analysed upload not yet saved) is kept
    draft_ttl_s: float = 3600.0
    #: drafts a tenant may hold at once (one more: 429)
    max_drafts_per_tenant: int = 3
    #: the platform's default music under a recorded voice (``bed=default``): a file, or the
    #: directory of files Asterisk's ``default`` class plays (in name order)
    music_bed_default: Path = Path("/var/lib/asterisk/moh")
    #: ``serve ari`` counts holds per tenant and day and writes them to the catalog
    hold_stats: bool = True
    #: days of hold statistics kept per tenant (``serve ari`` drops older days)
    stats_retention_days: int = 400
    #: the dial string of "call my phone", over ``{endpoint}`` (``PJSIP/acme-100``), ``{tech}``
    #: (``PJSIP``) and ``{resource}`` (``acme-100``)
    test_call_dial: str = "{endpoint}"
    #: how long the phone of a test call hears the tenant's music before the call ends
    test_call_seconds: float = 30.0
    class_prefix: str = "tenant-"
    ffmpeg: str = "ffmpeg"
    # derived from home in __post_init__ when unset, so always a Path once built
    moh_dir: Path = None  # type: ignore[assignment]
    publish_mode: str = "realtime"
    retain_old_s: float = 6 * 3600.0
    realtime_db: Path = None  # type: ignore[assignment]
    classes_conf: Path = None  # type: ignore[assignment]
    ari_url: str = "http://127.0.0.1:8088"
    ari_user: str = "ooma-moh"
    ari_password: str = ""
    ari_max_connections: int = 32
    ari_parallel_bridges: int = 4
    asterisk_cli: str = "asterisk -rx"
    ari_app: str = "ooma-moh"
    agi_listen: str = "127.0.0.1:4573"
    http_listen: str = "127.0.0.1:8480"
    #: empty: the embedded SQLite catalog in ``home``; ``postgresql://…``: a shared PostgreSQL
    database_url: str = ""
    #: empty: blobs in ``home/blobs``; ``s3://bucket/prefix``: object storage, ``home/blobs`` its cache
    blob_url: str = ""
    #: this node's name in the cluster (``ooma-moh agent``); empty: the host name
    node_id: str = ""
    #: how often an agent re-checks every tenant besides the notifications
    agent_reconcile_s: float = 60.0
    #: how often an agent says it is alive and checks what it published (a node with no heartbeat
    #: for 3 of these is ``down`` and not counted; docs/cluster.md, "Nodes")
    node_heartbeat_s: float = 10.0
    #: the S3 endpoint (else AWS_ENDPOINT_URL / AWS's own); credentials always from the AWS variables
    s3_endpoint_url: str = ""
    #: how S3 requests name the bucket: ``path`` (``endpoint/bucket/key``: what most S3-compatible
    #: servers need), ``virtual`` (``bucket.endpoint/key``: AWS' preferred form) or ``auto`` (botocore's choice)
    s3_addressing_style: str = "path"
    http_body_timeout_s: float = 120.0
    #: from a request's first byte to the end of its headers (slowloris: docs/http.md, "Limits")
    http_header_timeout_s: float = 10.0
    #: a connection with no request in progress (just opened, or between requests) is closed after this
    http_idle_timeout_s: float = 30.0
    #: connections open at once; when full, the oldest one with no request in progress makes room
    http_max_connections: int = 1000
    #: connections open at once from one client address (0: no such cap, e.g. behind a reverse proxy)
    http_max_connections_per_client: int = 100
    #: the address admins' browsers use (behind a reverse proxy: its https:// URL); empty: the
    #: listen address. Login links start with it; https makes the session cookie Secure.
    http_public_url: str = ""
    login_link_ttl_s: float = 900.0
    http_session_ttl_s: float = 28800.0
    agi_max_connections: int = 256
    agi_max_env_bytes: int = 16384
    agi_deadline_s: float = 30.0
    #: HOST:PORT of /metrics, /healthz and /readyz of a long-running command; empty: none
    metrics_listen: str = ""
    #: log lines of the long-running commands: ``text`` or ``json`` (one object per line)
    log_format: str = "text"

    def __post_init__(self) -> None:
        home = Path(self.home)
        object.__setattr__(self, "home", home)
        for name, default in (
            ("moh_dir", home / "moh"),
            ("realtime_db", home / "realtime.sqlite3"),
            ("classes_conf", home / "ooma-moh-classes.conf"),
        ):
            value = getattr(self, name)
            object.__setattr__(self, name, Path(value) if value is not None else default)
        self._check()

    def _check(self) -> None:
        """``ConfigError`` for the first rule of :meth:`_rules` the values break."""
        for ok, message in self._rules():
            if not ok:
                raise ConfigError(message)

    def _rules(self) -> Iterator[tuple[bool, str]]:
        """(holds, what to say if not) for each rule, in order: media limits, loudness, names,
        listeners, URLs, lifetimes, modes."""
        yield self.max_upload_bytes >= 1, "max_upload_bytes must be at least 1"
        yield (
            0 < self.min_duration_s < self.max_duration_s,
            "durations must satisfy 0 < min_duration_s < max_duration_s",
        )
        yield (
            1 <= self.min_sample_rate <= self.max_sample_rate,
            "sample rates must satisfy 1 <= min_sample_rate <= max_sample_rate",
        )
        yield self.max_channels >= 1, "max_channels must be at least 1"
        yield (
            self.ffmpeg_cpu_s >= 1 and self.ffmpeg_wall_s >= 1 and self.ffmpeg_memory_mb >= 64,
            "ffmpeg limits: ffmpeg_cpu_s and ffmpeg_wall_s >= 1, ffmpeg_memory_mb >= 64",
        )
        yield self.blob_grace_s >= 0, "blob_grace_s must be >= 0"
        yield (
            min(self.http_body_timeout_s, self.http_header_timeout_s, self.http_idle_timeout_s) > 0,
            "http_body_timeout_s, http_header_timeout_s and http_idle_timeout_s must be > 0",
        )
        yield (
            self.http_max_connections >= 1 and self.http_max_connections_per_client >= 0,
            "http_max_connections must be >= 1 and http_max_connections_per_client >= 0",
        )
        yield -70.0 <= self.loudness_lufs <= -5.0, f"loudness_lufs {self.loudness_lufs} is outside -70 .. -5"
        yield -20.0 <= self.true_peak_dbtp <= 0.0, f"true_peak_dbtp {self.true_peak_dbtp} is outside -20 .. 0"
        yield (
            -90.0 <= self.silence_threshold_db <= -20.0,
            f"silence_threshold_db {self.silence_threshold_db} is outside -90 .. -20",
        )
        yield 0 <= self.loop_crossfade_ms <= 5000, f"loop_crossfade_ms {self.loop_crossfade_ms} is outside 0 .. 5000"
        yield (
            self.draft_ttl_s > 0 and self.max_drafts_per_tenant >= 1,
            "draft_ttl_s must be > 0 and max_drafts_per_tenant at least 1",
        )
        yield 1 <= self.stats_retention_days <= 3660, "stats_retention_days must be between 1 and 3660"
        yield 1 <= self.test_call_seconds <= 600, "test_call_seconds must be between 1 and 600"
        yield (
            all(f in ("endpoint", "tech", "resource") for f in _template_fields(self.test_call_dial)),
            f"test_call_dial {self.test_call_dial!r} may only use {{endpoint}}, {{tech}} and {{resource}}",
        )
        yield (
            CLASS_PREFIX_PATTERN.fullmatch(self.class_prefix) is not None,
            f"class_prefix {self.class_prefix!r} must be 1-16 characters A-Z a-z 0-9 _ -",
        )
        yield self.retain_old_s >= 0, "retain_old_s must be >= 0"
        yield 0.1 <= self.node_heartbeat_s <= 3600, "node_heartbeat_s must be between 0.1 and 3600"
        for name in ("agi_listen", "http_listen", "metrics_listen"):
            value = getattr(self, name)
            off = name == "metrics_listen" and not value
            yield off or _is_host_port(value), f"{name} {value!r} must be HOST:PORT"
        yield (
            self.agi_max_connections >= 1 and self.agi_max_env_bytes >= 1024 and self.agi_deadline_s > 0,
            "agi_max_connections >= 1, agi_max_env_bytes >= 1024, agi_deadline_s > 0",
        )
        yield (
            self.ari_max_connections >= 1 and self.ari_parallel_bridges >= 1,
            "ari_max_connections and ari_parallel_bridges must be at least 1",
        )
        yield (
            not self.http_public_url or PUBLIC_URL_PATTERN.fullmatch(self.http_public_url) is not None,
            f"http_public_url {self.http_public_url!r} must be an http:// or https:// URL with no query",
        )
        yield (
            not self.database_url or self.database_url.startswith(("postgresql://", "postgres://")),
            "database_url must be empty (SQLite in the home) or a postgresql:// URL",
        )
        yield (
            not self.blob_url or BLOB_URL_PATTERN.fullmatch(self.blob_url) is not None,
            "blob_url must be empty (blobs in the home) or s3://bucket[/prefix]",
        )
        yield (
            self.login_link_ttl_s > 0 and self.http_session_ttl_s > 0,
            "login_link_ttl_s and http_session_ttl_s must be > 0",
        )
        yield self.publish_mode in PUBLISH_MODES, f"publish_mode must be one of {', '.join(PUBLISH_MODES)}"
        yield self.log_format in LOG_FORMATS, f"log_format must be one of {', '.join(LOG_FORMATS)}"
        yield (
            self.s3_addressing_style in S3_ADDRESSING_STYLES,
            f"s3_addressing_style must be one of {', '.join(S3_ADDRESSING_STYLES)}",
        )

    @property
    def catalog_path(self) -> Path:
        """The SQLite catalog of the embedded default back end."""
        return self.home / "catalog.sqlite3"

    @property
    def blob_dir(self) -> Path:
        """Content-addressed store of originals and renditions."""
        return self.home / "blobs"

    @property
    def agi_address(self) -> tuple[str, int]:
        """``agi_listen`` as (host, port)."""
        host, _, port = self.agi_listen.rpartition(":")
        return host or "127.0.0.1", int(port)

    @property
    def http_address(self) -> tuple[str, int]:
        """``http_listen`` as (host, port)."""
        host, _, port = self.http_listen.rpartition(":")
        return host or "127.0.0.1", int(port)

    @property
    def metrics_address(self) -> tuple[str, int] | None:
        """``metrics_listen`` as (host, port); None when it is off."""
        if not self.metrics_listen:
            return None
        host, _, port = self.metrics_listen.rpartition(":")
        return host or "127.0.0.1", int(port)

    @property
    def public_url(self) -> str:
        """Where browsers reach ``serve http``, without a trailing slash."""
        if self.http_public_url:
            return self.http_public_url.rstrip("/")
        host, port = self.http_address
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    @property
    def asterisk_cli_argv(self) -> list[str]:
        """``asterisk_cli`` split into an argv; the Asterisk command is appended to it."""
        return shlex.split(self.asterisk_cli)


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _coerce(name: str, raw: Any) -> Any:
    kind = _FIELDS[name].type
    if kind == "bool":
        return _boolean(name, raw)
    try:
        if "int" in kind:
            return int(raw)
        if "float" in kind:
            return float(raw)
        if "Path" in kind:
            return Path(str(raw)).expanduser()
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: {raw!r} is not a valid {kind.split(' ')[0]}") from None
    return str(raw)


def _boolean(name: str, raw: Any) -> bool:
    """A TOML boolean, or ``true``/``false``/``1``/``0``/``yes``/``no``/``on``/``off`` as text."""
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"{name}: {raw!r} is not true or false")


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, a TOML file, the environment and flag overrides."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_file = config_file or environ.get(CONFIG_ENV)
    if config_file:
        try:
            with open(config_file, "rb") as fh:
                document = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
        document = document.get("ooma_moh", document)
        for key, raw in document.items():
            if key not in _FIELDS:
                raise ConfigError(f"unknown setting {key!r} in {config_file}")
            values[key] = _coerce(key, raw)
    for name in _FIELDS:
        env_name = ENV_PREFIX + name.upper()
        if env_name in environ and environ[env_name] != "":
            values[name] = _coerce(name, environ[env_name])
    for name, raw in (overrides or {}).items():
        if raw is not None:
            values[name] = _coerce(name, raw)
    return Settings(**values)


def settings_environ(settings: Settings) -> dict[str, str]:
    """``OOMA_MOH_*`` variables that reproduce ``settings`` in a child process (the inverse of
    the environment layer of :func:`load_settings`)."""
    return {ENV_PREFIX + f.name.upper(): str(getattr(settings, f.name)) for f in dataclasses.fields(Settings)}


def _is_host_port(value: str) -> bool:
    """Whether ``value`` is ``HOST:PORT`` (an empty host means every address)."""
    _, sep, port = value.rpartition(":")
    return bool(sep) and port.isdigit() and 0 <= int(port) < 65536
