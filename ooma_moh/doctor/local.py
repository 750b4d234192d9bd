"""Doctor's checks of this host's own parts: ffmpeg (found, capable, converts a generated WAV
under the configured limits), the catalog (opened read-only, never created) and the blob store
(readable; object storage: reachable; the catalog's blobs present)."""

from __future__ import annotations

import array
import math
import os
import re
import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

from .. import ffmpeg
from ..app import catalog_present, open_blobs, open_catalog
from ..config import Settings
from ..errors import OomaMohError
from ..media import FfmpegConverter
from ..media_rules import CONTAINERS
from ..model import MohSetting
from .findings import (
    FAIL,
    FFMPEG_NEEDS,
    FFMPEG_WANTS,
    OK,
    WARN,
    Finding,
    missing_capabilities,
    one_line,
    parse_ffmpeg_list,
    s16le,
)

# -- ffmpeg --------------------------------------------------------------------------------------


def _ffmpeg_output(binary: str, *args: str) -> str:
    proc = subprocess.run(
        [binary, "-hide_banner", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        raise OomaMohError(f"`{binary} {' '.join(args)}` failed: {one_line(last, 160)}")
    return proc.stdout


def _test_wav(settings: Settings, path: Path) -> Path:
    """A short 440 Hz tone as a 16-bit WAV that every sane setting accepts as an upload."""
    rate = min(max(44100, settings.min_sample_rate), settings.max_sample_rate)
    seconds = min(max(1.5, settings.min_duration_s + 0.5), settings.max_duration_s)
    frames = int(rate * seconds)
    samples = array.array("h", (int(9000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(frames)))
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(s16le(samples))
    return path


def check_ffmpeg(settings: Settings) -> list[Finding]:
    """ffmpeg is there, runs, can do what uploads need, and converts a test file."""
    binary = settings.ffmpeg
    where = shutil.which(binary)
    if where is None:
        found = (
            f"ffmpeg not found: {binary!r} is not an executable file"
            if os.sep in binary
            else f"ffmpeg not found: no {binary!r} on PATH ({os.environ.get('PATH', '')})"
        )
        return [
            Finding(
                "ffmpeg",
                FAIL,
                found + "; uploads cannot be converted",
                "install ffmpeg (Debian: apt-get install ffmpeg), or set OOMA_MOH_FFMPEG to its path",
            )
        ]
    try:
        version_line = _ffmpeg_output(where, "-version").splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, OomaMohError, IndexError) as exc:
        return [
            Finding(
                "ffmpeg",
                FAIL,
                f"{where} does not run: {one_line(str(exc), 200)}",
                "reinstall ffmpeg (Debian: apt-get install --reinstall ffmpeg) or point OOMA_MOH_FFMPEG"
                " at a working one",
            )
        ]
    version = version_line.split()[2] if version_line.startswith("ffmpeg version ") else version_line
    try:
        have = {kind: parse_ffmpeg_list(_ffmpeg_output(where, f"-{kind}")) for kind in FFMPEG_NEEDS}
    except (OSError, subprocess.TimeoutExpired, OomaMohError) as exc:
        return [
            Finding(
                "ffmpeg",
                FAIL,
                f"ffmpeg {version} ({where}) cannot list its codecs: {one_line(str(exc))}",
                "install Debian's ffmpeg package (apt-get install ffmpeg)",
            )
        ]
    missing = missing_capabilities(have, FFMPEG_NEEDS)
    if missing:
        return [
            Finding(
                "ffmpeg",
                FAIL,
                f"ffmpeg {version} ({where}) lacks {', '.join(missing)}: uploads cannot be"
                " decoded or the renditions cannot be written",
                "install a full ffmpeg build (Debian: apt-get install ffmpeg), or set OOMA_MOH_FFMPEG to one",
            )
        ]
    try:
        with tempfile.TemporaryDirectory(prefix="ooma-moh-doctor-") as work:
            wav = _test_wav(settings, Path(work) / "doctor.wav")
            FfmpegConverter(settings).convert(wav, Path(work))
    except OomaMohError as exc:
        return [
            Finding(
                "ffmpeg",
                FAIL,
                f"ffmpeg {version} ({where}) failed a test conversion of a generated WAV: {one_line(str(exc))}",
                "fix what the message names (e.g. raise OOMA_MOH_FFMPEG_MEMORY_MB, free disk space in"
                f" {tempfile.gettempdir()}), then run doctor again",
            )
        ]
    summary = (
        f"ffmpeg {version} ({where}): decodes {', '.join(sorted(CONTAINERS))}, writes .sln .sln16 .ulaw"
        " .alaw .g722; a test conversion passed"
    )
    notes = []
    optional = missing_capabilities(have, FFMPEG_WANTS)
    major = re.match(r"n?(\d+)\.", version)
    if optional:
        notes.append(f"lacks {', '.join(optional)}: uploads needing them are refused as undecodable")
    if major and int(major.group(1)) < 5:
        notes.append("older than 5.1, the version ooma-moh is tested with (Debian 12)")
    if not (ffmpeg.PRLIMIT and ffmpeg.SETPRIV):
        notes.append(
            "prlimit/setpriv (util-linux) not found: ffmpeg's limits are set from Python instead,"
            " which is unsafe in the threaded servers"
        )
    if notes:
        return [
            Finding(
                "ffmpeg",
                WARN,
                summary + "; but it " + "; ".join(notes),
                "install Debian's ffmpeg and util-linux packages",
            )
        ]
    return [Finding("ffmpeg", OK, summary)]


# -- catalog and blobs ---------------------------------------------------------------------------


def check_storage(settings: Settings) -> list[Finding]:
    """The catalog (never created) and the blob store."""
    where = "the PostgreSQL catalog" if settings.database_url else f"catalog {settings.catalog_path}"
    findings: list[Finding] = []
    referenced: set[str] | None = None
    try:
        present = catalog_present(settings)
    except OomaMohError as exc:
        present = None
        findings.append(
            Finding(
                "catalog",
                FAIL,
                f"{where} cannot be opened: {one_line(str(exc))}",
                "restore it from a backup"
                if "damaged" in str(exc) or "not a database" in str(exc)
                else "make it reachable and readable by this user (OOMA_MOH_DATABASE_URL,"
                " permissions of OOMA_MOH_HOME)",
            )
        )
    if present is False:
        if settings.database_url:
            findings.append(
                Finding(
                    "catalog",
                    FAIL,
                    "the catalog database has no ooma-moh schema",
                    "check OOMA_MOH_DATABASE_URL; on a new database run `ooma-moh db upgrade`",
                )
            )
        else:
            findings.append(
                Finding(
                    "catalog",
                    FAIL,
                    f"no catalog in {settings.home}",
                    "check OOMA_MOH_HOME (or --home, `home` in the config file): it must be the"
                    " data home `sync` and `upload` use; on a new host run `ooma-moh init`",
                )
            )
    elif present:
        try:
            catalog = open_catalog(settings, writable=False)
        except OomaMohError as exc:
            findings.append(
                Finding(
                    "catalog",
                    FAIL,
                    f"{where} cannot be opened: {one_line(str(exc))}",
                    'follow the message; docs/configuration.md, "Opening the data home"',
                )
            )
        else:
            try:
                tenants = catalog.list()
                referenced = catalog.referenced_blobs()
            except OomaMohError as exc:
                findings.append(
                    Finding(
                        "catalog",
                        FAIL,
                        f"{where} cannot be read: {one_line(str(exc))}",
                        "make it readable by this user, or restore it from a backup",
                    )
                )
            else:
                on_file = sum(1 for t in tenants if t.setting is MohSetting.FILE)
                findings.append(
                    Finding("catalog", OK, f"{where}: {len(tenants)} tenant(s), {on_file} on their own music")
                )
            finally:
                catalog.close()
    findings.append(_check_blobs(settings, referenced))
    return findings


#: At most this many referenced blobs are looked up in object storage (one request each).
REMOTE_SAMPLE = 20


def _check_blobs(settings: Settings, referenced: set[str] | None) -> Finding:
    where = f"object storage {settings.blob_url}" if settings.blob_url else f"blob store {settings.blob_dir}"
    try:
        blobs = open_blobs(settings, writable=False)
        holds = blobs.holds_files()  # object storage: one listing request, so reachable
    except OomaMohError as exc:
        return _blobs_unreadable(settings, where, exc)
    if not settings.blob_url and settings.blob_dir.exists() and not os.access(settings.blob_dir, os.R_OK | os.X_OK):
        return Finding(
            "blobs",
            FAIL,
            f"{where} is not readable by this user (uid {os.getuid()})",
            "run ooma-moh as the owner of the data home, or fix the directory's permissions",
        )
    if referenced is None:
        return Finding(
            "blobs",
            WARN if holds else OK,
            f"{where} readable; holds files: {'yes' if holds else 'no'};"
            " not compared with the catalog (no readable catalog)",
            "fix the catalog first" if holds else "",
        )
    if settings.blob_url:
        sample = sorted(referenced)[:REMOTE_SAMPLE]
        try:
            missing = [sha for sha in sample if not blobs.exists(sha) and not blobs.path(sha).is_file()]
        except OomaMohError as exc:
            return _blobs_unreadable(settings, where, exc)
        checked = f"{len(sample)} of the catalog's {len(referenced)} files looked up"
    else:
        trash = settings.blob_dir / "trash"
        missing = [sha for sha in sorted(referenced) if not blobs.path(sha).is_file() and not (trash / sha).is_file()]
        unreadable = [
            sha for sha in sorted(referenced) if blobs.path(sha).is_file() and not os.access(blobs.path(sha), os.R_OK)
        ]
        if unreadable:
            return Finding(
                "blobs",
                FAIL,
                f"{where}: {len(unreadable)} of the catalog's files are not readable by"
                f" this user (e.g. {unreadable[0][:16]}...)",
                "run ooma-moh as the owner of the data home, or fix the files' permissions (0644)",
            )
        checked = f"all {len(referenced)} files of the catalog present"
    if missing:
        return Finding(
            "blobs",
            FAIL,
            f"{where}: {len(missing)} files the catalog names are missing (e.g. sha256 {missing[0][:16]}...)",
            "restore the blob store from a backup (tenants whose files are missing cannot be synced to new hosts)",
        )
    return Finding("blobs", OK, f"{where} readable; {checked}")


def _blobs_unreadable(settings: Settings, where: str, exc: OomaMohError) -> Finding:
    """The blob store cannot be read (object storage: not reached)."""
    return Finding(
        "blobs",
        FAIL,
        f"{where} cannot be read: {one_line(str(exc))}",
        "check OOMA_MOH_BLOB_URL, OOMA_MOH_S3_ENDPOINT_URL and the AWS_* credentials"
        if settings.blob_url
        else f"make {settings.blob_dir} readable by this user",
    )
