"""``ooma-moh doctor``: is this host ready to give callers their tenant's music on hold?

Each check is a function that returns :class:`Finding` (``ok``, ``warn`` or ``fail``, what was
found, what to do) and never raises: a check that cannot run says so as a finding. Checked, in
the order printed:

- ``ffmpeg``: found, runs, has the demuxers, decoders, filters, encoders and muxers the uploads and
  renditions need, and converts a generated WAV end to end under the configured limits;
- ``catalog``: present and readable, opened read-only (doctor never creates one: a missing catalog
  is a finding about ``OOMA_MOH_HOME`` / ``OOMA_MOH_DATABASE_URL``);
- ``blobs``: the blob store readable (object storage: reachable), the catalog's blobs present;
- ``ari``: Asterisk's REST interface answers with the configured user and password;
- ``modules``: the Asterisk modules music on hold, the realtime publication and the ARI handler
  need are running (``GET /asterisk/modules``);
- ``moh-dir``: the MOH directory and everything under it readable and traversable by the user
  Asterisk runs as — judged by the permission bits for that user's uid and groups, including
  every directory above it (root's power to ignore them is deliberately not counted: a tree only
  root can read breaks when Asterisk runs as its own user, as Debian's package does);
- ``realtime-db`` (realtime mode): the realtime SQLite file readable and writable by that user;
- ``realtime-mapping`` (realtime mode): Asterisk finds, through ``REALTIME(musiconhold,...)``
  evaluated on a channel of doctor's own, a probe row doctor wrote into ``OOMA_MOH_REALTIME_DB``
  — the extconfig mapping is in place *and* res_config_sqlite3 reads this very file;
- ``call`` (``--call``): Asterisk plays a class to a channel of doctor's own (an ARI external
  media channel streaming to a local UDP port) and the audio received is compared, sample for
  sample, with that class's ``.sln16`` file. Realtime mode plays a probe class doctor publishes
  for the test (a frequency sweep in ``<moh_dir>/.doctor-<pid>``); static mode plays the first
  published tenant class (a new class would need a reload). Asterisk plays ``default`` for a
  class it cannot find, so anything but the class's own samples fails.

Asterisk's user is the process listening on the ARI port (``/proc``), else ``runuser`` as ARI's
``GET /asterisk/info`` reports it, else a local user ``asterisk``; if none is known the
permission bits for "other" are checked.

Doctor's channel lives in a temporary Stasis application (``ooma-moh-doctor-<pid>``); the probe
row, the probe directory and the channel are removed before it exits.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import grp
import ipaddress
import json
import math
import os
import pwd
import re
import shutil
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import click

from . import ffmpeg
from .app import catalog_present, open_blobs, open_catalog
from .ari.client import AriClient
from .config import Settings
from .errors import AriRequestFailed, AsteriskError, OomaMohError
from .media import CONTAINERS, FfmpegConverter
from .model import MohSetting
from .publish import REALTIME_SCHEMA, StaticPublisher

OK, WARN, FAIL = "ok", "warn", "fail"
LABELS = {OK: "ok", WARN: "warn", FAIL: "FAIL"}
ARI_TIMEOUT_S = 5.0
#: How long the probe call listens to what Asterisk plays.
LISTEN_S = 1.5
PROBE_RATE = 16000


@dataclass(frozen=True)
class Finding:
    """One result of ``doctor``: ``status`` is ``ok``, ``warn`` or ``fail``; ``advice`` says
    what to do (empty when there is nothing to do)."""

    check: str
    status: str
    found: str
    advice: str = ""

    def line(self) -> str:
        """The finding as one line of text."""
        text = f"{LABELS[self.status]:<4} {self.check:<16} {self.found}"
        return text + (f" To do: {self.advice}" if self.advice else "")

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-able data."""
        return {"check": self.check, "status": self.status, "found": self.found, "advice": self.advice}


def _guarded(name: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """Run one check; an unexpected exception becomes a failed finding instead of a traceback."""
    try:
        return check()
    except Exception as exc:  # a doctor reports; it does not crash on what it examines
        return [Finding(name, FAIL, f"the check itself failed: {type(exc).__name__}: {one_line(str(exc))}",
                        "report this as a bug of ooma-moh, with this line")]


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- ffmpeg --------------------------------------------------------------------------------------

#: What the uploads and renditions need from ffmpeg: kind -> (required names, names of which one
#: is enough per alternative). Decoders of the rarer containers are only recommended.
FFMPEG_NEEDS: dict[str, tuple[str, ...]] = {
    "demuxers": ("wav", "mp3", "f32le"),
    "decoders": ("pcm_s16le", "mp3float|mp3"),
    "filters": ("aresample", "aformat", "asplit", "ebur128", "anullsink", "volume", "alimiter"),
    "encoders": ("pcm_s16le", "pcm_mulaw", "pcm_alaw", "adpcm_g722"),
    "muxers": ("s16le", "mulaw", "alaw", "g722", "f32le"),
}
FFMPEG_WANTS: dict[str, tuple[str, ...]] = {
    "demuxers": ("ogg", "flac", "mov", "aac"),
    "decoders": ("vorbis|libvorbis", "opus|libopus", "flac", "aac|aac_fixed", "alac"),
}


def parse_ffmpeg_list(text: str) -> set[str]:
    """Names in the output of ``ffmpeg -decoders`` (``-encoders``, ``-filters``, ``-demuxers``,
    ``-muxers``): the second column, split at commas, plus the codec a coder implements
    (``g722 ... (codec adpcm_g722)``)."""
    names: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[1] == "=" or not re.fullmatch(r"[A-Za-z.|]{1,6}", fields[0]):
            continue
        names.update(n for n in fields[1].split(",") if n)
        if match := re.search(r"\(codec (\S+?)\)", line):
            names.add(match.group(1))
    return names


def missing_capabilities(have: dict[str, set[str]], needs: dict[str, tuple[str, ...]]) -> list[str]:
    """``kind name`` for every need (``a|b``: either will do) that ``have`` lacks."""
    missing = []
    for kind, wanted in needs.items():
        for alternatives in wanted:
            if not set(alternatives.split("|")) & have.get(kind, set()):
                missing.append(f"{kind[:-1]} {alternatives.split('|')[0]}")
    return missing


def _ffmpeg_output(binary: str, *args: str) -> str:
    proc = subprocess.run([binary, "-hide_banner", *args], capture_output=True, text=True, timeout=30,
                          check=False, stdin=subprocess.DEVNULL)
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
    if sys.byteorder == "big":
        samples.byteswap()
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.tobytes())
    return path


def check_ffmpeg(settings: Settings) -> list[Finding]:
    """ffmpeg is there, runs, can do what uploads need, and converts a test file."""
    binary = settings.ffmpeg
    where = shutil.which(binary)
    if where is None:
        found = (f"ffmpeg not found: {binary!r} is not an executable file" if os.sep in binary
                 else f"ffmpeg not found: no {binary!r} on PATH ({os.environ.get('PATH', '')})")
        return [Finding("ffmpeg", FAIL, found + "; uploads cannot be converted",
                        "install ffmpeg (Debian: apt-get install ffmpeg), or set OOMA_MOH_FFMPEG to its path")]
    try:
        version_line = _ffmpeg_output(where, "-version").splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, OomaMohError, IndexError) as exc:
        return [Finding("ffmpeg", FAIL, f"{where} does not run: {one_line(str(exc), 200)}",
                        "reinstall ffmpeg (Debian: apt-get install --reinstall ffmpeg) or point OOMA_MOH_FFMPEG"
                        " at a working one")]
    version = version_line.split()[2] if version_line.startswith("ffmpeg version ") else version_line
    try:
        have = {kind: parse_ffmpeg_list(_ffmpeg_output(where, f"-{kind}")) for kind in FFMPEG_NEEDS}
    except (OSError, subprocess.TimeoutExpired, OomaMohError) as exc:
        return [Finding("ffmpeg", FAIL, f"ffmpeg {version} ({where}) cannot list its codecs: {one_line(str(exc))}",
                        "install Debian's ffmpeg package (apt-get install ffmpeg)")]
    missing = missing_capabilities(have, FFMPEG_NEEDS)
    if missing:
        return [Finding("ffmpeg", FAIL, f"ffmpeg {version} ({where}) lacks {', '.join(missing)}: uploads cannot be"
                        " decoded or the renditions cannot be written",
                        "install a full ffmpeg build (Debian: apt-get install ffmpeg), or set OOMA_MOH_FFMPEG"
                        " to one")]
    try:
        with tempfile.TemporaryDirectory(prefix="ooma-moh-doctor-") as work:
            wav = _test_wav(settings, Path(work) / "doctor.wav")
            FfmpegConverter(settings).convert(wav, Path(work))
    except OomaMohError as exc:
        return [Finding("ffmpeg", FAIL, f"ffmpeg {version} ({where}) failed a test conversion of a generated"
                        f" WAV: {one_line(str(exc))}",
                        "fix what the message names (e.g. raise OOMA_MOH_FFMPEG_MEMORY_MB, free disk space in"
                        f" {tempfile.gettempdir()}), then run doctor again")]
    summary = (f"ffmpeg {version} ({where}): decodes {', '.join(sorted(CONTAINERS))}, writes .sln .sln16 .ulaw"
               " .alaw .g722; a test conversion passed")
    notes = []
    optional = missing_capabilities(have, FFMPEG_WANTS)
    major = re.match(r"n?(\d+)\.", version)
    if optional:
        notes.append(f"lacks {', '.join(optional)}: uploads needing them are refused as undecodable")
    if major and int(major.group(1)) < 5:
        notes.append("older than 5.1, the version ooma-moh is tested with (Debian 12)")
    if not (ffmpeg.PRLIMIT and ffmpeg.SETPRIV):
        notes.append("prlimit/setpriv (util-linux) not found: ffmpeg's limits are set from Python instead,"
                     " which is unsafe in the threaded servers")
    if notes:
        return [Finding("ffmpeg", WARN, summary + "; but it " + "; ".join(notes),
                        "install Debian's ffmpeg and util-linux packages")]
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
        findings.append(Finding("catalog", FAIL, f"{where} cannot be opened: {one_line(str(exc))}",
                                "restore it from a backup" if "damaged" in str(exc) or "not a database" in str(exc)
                                else "make it reachable and readable by this user (OOMA_MOH_DATABASE_URL,"
                                " permissions of OOMA_MOH_HOME)"))
    if present is False:
        if settings.database_url:
            findings.append(Finding("catalog", FAIL, "the catalog database has no ooma-moh schema",
                                    "check OOMA_MOH_DATABASE_URL; on a new database run `ooma-moh db upgrade`"))
        else:
            findings.append(Finding("catalog", FAIL, f"no catalog in {settings.home}",
                                    "check OOMA_MOH_HOME (or --home, `home` in the config file): it must be the"
                                    " data home `sync` and `upload` use; on a new host run `ooma-moh init`"))
    elif present:
        try:
            catalog = open_catalog(settings, writable=False)
        except OomaMohError as exc:
            findings.append(Finding("catalog", FAIL, f"{where} cannot be opened: {one_line(str(exc))}",
                                    "follow the message; docs/configuration.md, \"Opening the data home\""))
        else:
            try:
                tenants = catalog.list()
                referenced = catalog.referenced_blobs()
            except OomaMohError as exc:
                findings.append(Finding("catalog", FAIL, f"{where} cannot be read: {one_line(str(exc))}",
                                        "make it readable by this user, or restore it from a backup"))
            else:
                on_file = sum(1 for t in tenants if t.setting is MohSetting.FILE)
                findings.append(Finding("catalog", OK, f"{where}: {len(tenants)} tenant(s), {on_file} on their own"
                                        " music"))
            finally:
                catalog.close()
    findings.append(_check_blobs(settings, referenced))
    return findings


#: At most this many referenced blobs are looked up in object storage (one request each).
REMOTE_SAMPLE = 20


def _check_blobs(settings: Settings, referenced: set[str] | None) -> Finding:
    where = (f"object storage {settings.blob_url}" if settings.blob_url else f"blob store {settings.blob_dir}")
    try:
        blobs = open_blobs(settings, writable=False)
        holds = blobs.holds_files()  # object storage: one listing request, so reachable
    except OomaMohError as exc:
        return Finding("blobs", FAIL, f"{where} cannot be read: {one_line(str(exc))}",
                       "check OOMA_MOH_BLOB_URL, OOMA_MOH_S3_ENDPOINT_URL and the AWS_* credentials"
                       if settings.blob_url else f"make {settings.blob_dir} readable by this user")
    if not settings.blob_url and settings.blob_dir.exists() and not os.access(settings.blob_dir, os.R_OK | os.X_OK):
        return Finding("blobs", FAIL, f"{where} is not readable by this user (uid {os.getuid()})",
                       "run ooma-moh as the owner of the data home, or fix the directory's permissions")
    if referenced is None:
        return Finding("blobs", WARN if holds else OK, f"{where} readable; holds files: {'yes' if holds else 'no'};"
                       " not compared with the catalog (no readable catalog)",
                       "fix the catalog first" if holds else "")
    if settings.blob_url:
        sample = sorted(referenced)[:REMOTE_SAMPLE]
        try:
            missing = [sha for sha in sample if not blobs.exists(sha) and not blobs.path(sha).is_file()]
        except OomaMohError as exc:
            return Finding("blobs", FAIL, f"{where} cannot be read: {one_line(str(exc))}",
                           "check OOMA_MOH_BLOB_URL, OOMA_MOH_S3_ENDPOINT_URL and the AWS_* credentials")
        checked = f"{len(sample)} of the catalog's {len(referenced)} files looked up"
    else:
        trash = settings.blob_dir / "trash"
        missing = [sha for sha in sorted(referenced) if not blobs.path(sha).is_file() and not (trash / sha).is_file()]
        unreadable = [sha for sha in sorted(referenced) if blobs.path(sha).is_file()
                      and not os.access(blobs.path(sha), os.R_OK)]
        if unreadable:
            return Finding("blobs", FAIL, f"{where}: {len(unreadable)} of the catalog's files are not readable by"
                           f" this user (e.g. {unreadable[0][:16]}...)",
                           "run ooma-moh as the owner of the data home, or fix the files' permissions (0644)")
        checked = f"all {len(referenced)} files of the catalog present"
    if missing:
        return Finding("blobs", FAIL, f"{where}: {len(missing)} files the catalog names are missing (e.g. sha256"
                       f" {missing[0][:16]}...)",
                       "restore the blob store from a backup (tenants whose files are missing cannot be"
                       " synced to new hosts)")
    return Finding("blobs", OK, f"{where} readable; {checked}")


# -- Asterisk's user and file permissions -------------------------------------------------------

@dataclass(frozen=True)
class AsteriskUser:
    """Whom the permission bits are judged for: a uid and its groups, or "other" (uid None)."""

    uid: int | None
    gids: frozenset[int] = frozenset()
    label: str = "any user"


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def _pid_with_socket(inodes: set[str]) -> int | None:
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return int(entry.name)
        except OSError:  # not ours to look at, or gone
            continue
    return None


def _is_local(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        try:
            address = ipaddress.ip_address(socket.gethostbyname(host))
        except (OSError, ValueError):
            return False
    if address.is_loopback or address.is_unspecified:
        return True
    try:  # an address of this host: binding to it works
        with socket.socket(socket.AF_INET6 if address.version == 6 else socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((str(address), 0))
        return True
    except OSError:
        return False


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def process_user(pid: int) -> AsteriskUser | None:
    """The file-access identity (fs uid, fs gid, supplementary groups) of process ``pid``."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    try:
        uid = int(values["Uid"].split()[3])
        gids = {int(values["Gid"].split()[3]), *(int(g) for g in values.get("Groups", "").split())}
    except (KeyError, IndexError, ValueError):
        return None
    return AsteriskUser(uid, frozenset(gids), f"uid {uid} ({_user_name(uid)}), process {pid}")


def _named_user(name: str, group: str = "", source: str = "") -> AsteriskUser | None:
    try:
        entry = pwd.getpwnam(name)
        gid = grp.getgrnam(group).gr_gid if group else entry.pw_gid
    except KeyError:
        return None
    gids = {gid, *os.getgrouplist(name, entry.pw_gid)}
    return AsteriskUser(entry.pw_uid, frozenset(gids), f"uid {entry.pw_uid} ({name}), {source}")


def _is_asterisk(pid: int) -> bool:
    """Whether process ``pid`` is Asterisk itself (not, say, a proxy in front of ARI)."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip().startswith("asterisk")
    except OSError:
        return False


def asterisk_user(settings: Settings, info: dict[str, Any] | None) -> AsteriskUser:
    """Whom Asterisk runs as: the process on the ARI port, else ARI's ``setid``, else a local
    user ``asterisk``, else unknown (judged as "other")."""
    parts = urlsplit(settings.ari_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if _is_local(parts.hostname or ""):
        pid = _pid_with_socket(_listening_inodes(port))
        if pid is not None and _is_asterisk(pid) and (found := process_user(pid)):
            return found
    setid = ((info or {}).get("config") or {}).get("setid") or {}
    if setid.get("user") and (named := _named_user(setid["user"], setid.get("group", ""), "Asterisk's runuser")):
        return named
    if named := _named_user("asterisk", "", "the local user asterisk"):
        return named
    return AsteriskUser(None, frozenset(), "user unknown, so judged for any user")


def _allowed_bits(st: os.stat_result, who: AsteriskUser) -> int:
    if who.uid is not None and st.st_uid == who.uid:
        return (st.st_mode >> 6) & 7
    if st.st_gid in who.gids:
        return (st.st_mode >> 3) & 7
    return st.st_mode & 7


def denial(path: Path, st: os.stat_result, who: AsteriskUser, need: int) -> str | None:
    """Why ``who`` may not ``need`` (bits: 4 read, 2 write, 1 search/execute) on ``path``, or None."""
    lacking = need & ~_allowed_bits(st, who)
    if not lacking:
        return None
    names = [n for n, b in (("read", 4), ("write", 2), ("search" if stat.S_ISDIR(st.st_mode) else "execute", 1))
             if lacking & b]
    return (f"{path} (mode {stat.S_IMODE(st.st_mode):04o}, owner {_user_name(st.st_uid)}, group {st.st_gid})"
            f" denies {'+'.join(names)}")


def path_denial(path: Path, who: AsteriskUser) -> str | None:
    """The first directory above ``path`` that ``who`` cannot search, or None."""
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except OSError:
            return f"{parent} cannot be examined"
        if problem := denial(parent, st, who, 1):
            return problem
    return None


def _walk_denials(root: Path, who: AsteriskUser) -> Iterator[str]:
    """Every entry of the MOH tree Asterisk reads (class and version directories, their files;
    dot-entries are skipped as Asterisk and sync skip them) that ``who`` may not read."""
    stack = [(root, 0)]
    while stack:
        directory, depth = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            yield f"{directory} cannot be listed ({exc.strerror})"
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                yield f"{entry.path} cannot be examined ({exc.strerror})"
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if problem := denial(Path(entry.path), st, who, 5 if is_dir else 4):
                yield problem
            elif is_dir and depth < 2:
                stack.append((Path(entry.path), depth + 1))


def check_moh_dir(settings: Settings, who: AsteriskUser) -> list[Finding]:
    """The MOH directory tree is readable and traversable by Asterisk's user."""
    root = settings.moh_dir
    advice = (f"make {root} and the directories above it searchable and readable by Asterisk's user: directories"
              " 0755, files 0644 (what `ooma-moh sync` makes), or chgrp them to Asterisk's group")
    if not root.exists():
        existing = next((p for p in root.parents if p.exists()), Path("/"))
        if problem := path_denial(existing / "x", who):
            return [Finding("moh-dir", FAIL, f"{root} does not exist yet, and Asterisk ({who.label}) could not"
                            f" reach it: {problem}", advice)]
        return [Finding("moh-dir", WARN, f"{root} does not exist yet: no class was ever published from this home",
                        "run `ooma-moh sync --all` (it creates it), or check OOMA_MOH_MOH_DIR / OOMA_MOH_HOME")]
    st = root.stat()
    if not stat.S_ISDIR(st.st_mode):
        return [Finding("moh-dir", FAIL, f"{root} is not a directory", "remove it, or set OOMA_MOH_MOH_DIR")]
    problem = path_denial(root, who) or denial(root, st, who, 5)
    if problem:
        return [Finding("moh-dir", FAIL, f"Asterisk ({who.label}) cannot read {root}: {problem}; callers of every"
                        " tenant hear the default class", advice)]
    problems = list(_walk_denials(root, who))
    if problems:
        return [Finding("moh-dir", FAIL, f"Asterisk ({who.label}) cannot read {len(problems)} entries under {root},"
                        f" e.g. {problems[0]}; those tenants' callers hear the default class", advice)]
    classes = sum(1 for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    return [Finding("moh-dir", OK, f"{root}: {classes} class director{'y' if classes == 1 else 'ies'}, all readable by"
                    f" Asterisk ({who.label})")]


def check_realtime_db(settings: Settings, who: AsteriskUser) -> list[Finding]:
    """Realtime mode: Asterisk's user can read and write the realtime database (SQLite readers
    write the WAL index)."""
    db = settings.realtime_db
    advice = (f"let Asterisk's user read and write {db}, its -wal and -shm files and write its directory, e.g."
              f" `chgrp asterisk {db.parent}; chmod 2775 {db.parent}` (docs/asterisk.md)")
    if not db.exists():
        return [Finding("realtime-db", FAIL, f"{db} does not exist: Asterisk cannot be reading it",
                        "run `ooma-moh sync --all` (it creates it), make res_config_sqlite3.conf's dbfile this"
                        " path (OOMA_MOH_REALTIME_DB), then `module reload res_config_sqlite3.so`")]
    problems = [p for p in (path_denial(db, who), denial(db, db.stat(), who, 6)) if p]
    for side in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if side.exists():
            problems += [p for p in (denial(side, side.stat(), who, 6),) if p]
        elif problem := denial(db.parent, db.parent.stat(), who, 3):
            problems.append(f"{problem} ({side.name} must be created there)")
    if problems:
        return [Finding("realtime-db", FAIL, f"Asterisk ({who.label}) cannot use {db}: {problems[0]}", advice)]
    return [Finding("realtime-db", OK, f"{db} readable and writable by Asterisk ({who.label})")]


# -- Asterisk over ARI ---------------------------------------------------------------------------

#: module -> (when it is needed, what for); "fail" modules are needed in every deployment.
MODULES: tuple[tuple[str, str, str], ...] = (
    ("res_musiconhold.so", "always", "music on hold itself"),
    ("format_sln.so", "always", "plays the .sln and .sln16 renditions"),
    ("format_pcm.so", "always", "plays the .ulaw, .alaw and .g722 renditions"),
    ("func_channel.so", "always", "CHANNEL(musicclass), set by the AGI route and the ARI handler"),
    ("res_config_sqlite3.so", "realtime", "reads the realtime classes"),
    ("res_stasis.so", "always", "ARI applications: `serve ari` and doctor's probes"),
    ("res_ari_channels.so", "always", "ARI channel calls: `serve ari` and doctor's probes"),
    ("res_ari_events.so", "always", "the ARI events WebSocket"),
    ("res_http_websocket.so", "always", "the ARI events WebSocket"),
    ("res_ari_bridges.so", "advised", "`serve ari` reads bridges"),
    ("res_ari_applications.so", "advised", "`serve ari` subscribes to every channel and bridge"),
    ("res_agi.so", "advised", "the AGI route (`serve agi`, ooma-moh-agi)"),
    ("func_realtime.so", "realtime-advised", "doctor's realtime check"),
)
CALL_MODULES = ("chan_rtp.so", "res_rtp_asterisk.so")


def check_modules(settings: Settings, running: set[str]) -> Finding:
    """The modules ooma-moh needs are running."""
    realtime = settings.publish_mode == "realtime"
    required: list[str] = []
    advised: list[str] = []
    for name, when, why in MODULES:
        if name in running or (when.startswith("realtime") and not realtime):
            continue
        (required if when in ("always", "realtime") else advised).append(f"{name} ({why})")
    if required:
        return Finding("modules", FAIL, f"Asterisk is not running {', '.join(required)}",
                       "load them (`module load NAME`) and make sure modules.conf does not `noload` them")
    if advised:
        return Finding("modules", WARN, f"Asterisk is not running {', '.join(advised)}",
                       "load them (`module load NAME`) if you use what they are for")
    wanted = [n for n, when, _ in MODULES if realtime or not when.startswith("realtime")]
    return Finding("modules", OK, f"{len(wanted)} modules ooma-moh uses are running (res_musiconhold.so,"
                   f"{' res_config_sqlite3.so,' if realtime else ''} format_sln.so, ARI...)")


def ari_failure(settings: Settings, exc: OomaMohError) -> Finding:
    """What a failed first ARI request means."""
    url = settings.ari_url
    if isinstance(exc, AriRequestFailed) and exc.status == 401:
        empty = " (OOMA_MOH_ARI_PASSWORD is empty)" if not settings.ari_password else ""
        return Finding("ari", FAIL, f"ARI at {url} refused user {settings.ari_user!r}: ARI password wrong{empty}"
                       " (401 Unauthorized)",
                       f"set OOMA_MOH_ARI_PASSWORD (and OOMA_MOH_ARI_USER) to the password of the"
                       f" [{settings.ari_user}] user in ari.conf, or fix ari.conf and `module reload res_ari.so`")
    if isinstance(exc, AriRequestFailed) and exc.status == 404:
        return Finding("ari", FAIL, f"Asterisk's HTTP server at {url} answers, but not ARI (404)",
                       "load res_ari.so and res_ari_asterisk.so, set enabled=yes in ari.conf's [general]")
    if isinstance(exc, AriRequestFailed):
        return Finding("ari", FAIL, f"ARI at {url} answered {exc.status}: {one_line(str(exc), 200)}",
                       "look at Asterisk's log for the reason")
    return Finding("ari", FAIL, f"Asterisk not reachable over ARI: {one_line(str(exc), 200)}",
                   "start Asterisk, or check http.conf (enabled=yes, bindaddr and bindport matching"
                   " OOMA_MOH_ARI_URL; `asterisk -rx 'http show status'`)")


def probe_name() -> str:
    """The probe class's name: with a dot, which no tenant class can contain, so `sync` never
    takes it for one of its own."""
    return f"ooma-moh.doctor.{os.getpid()}"


def probe_audio(seconds: float = 4.0, rate: int = PROBE_RATE) -> bytes:
    """The probe class's audio as s16le: a sweep from 400 to 1600 Hz, unlike any music."""
    frames = int(seconds * rate)
    out = array.array("h")
    phase = 0.0
    for i in range(frames):
        freq = 400.0 + 1200.0 * i / frames
        phase += 2 * math.pi * freq / rate
        out.append(int(7000 * math.sin(phase)))
    if sys.byteorder == "big":
        out.byteswap()
    return out.tobytes()


def heard_verdict(received_be: bytes, reference_le: bytes, rate: int = PROBE_RATE) -> tuple[str, str]:
    """Compare what an external media channel received (big-endian s16 from RTP) with a class's
    ``.sln16`` file: ``("match", ...)`` when every loud 100 ms window of it occurs, sample for
    sample, in the file; else ``("silence", ...)`` or ``("other", ...)``."""
    pcm = array.array("h")
    pcm.frombytes(received_be[: len(received_be) // 2 * 2])
    if sys.byteorder == "little":
        pcm.byteswap()
    window = rate // 10
    loud = []
    for start in range(window, len(pcm) - window + 1, window):  # the first 100 ms may be setup
        chunk = pcm[start:start + window]
        if math.sqrt(sum(x * x for x in chunk) / window) > 100:
            loud.append(chunk.tobytes() if sys.byteorder == "little" else _swapped(chunk))
    seconds = len(pcm) / rate
    if len(loud) < 3:
        return "silence", f"{seconds:.1f} s of audio received, {len(loud)} loud 100 ms windows"
    looped = reference_le + reference_le[: window * 2]
    found = sum(1 for chunk in loud if _find_aligned(looped, chunk))
    if found == len(loud):
        return "match", f"{len(loud)} windows of 100 ms received, each found sample for sample in the class's file"
    return "other", (f"{found} of {len(loud)} loud windows of 100 ms found in the class's file: Asterisk played"
                     " something else")


def _swapped(chunk: array.array[int]) -> bytes:
    copy = array.array("h", chunk)
    copy.byteswap()
    return copy.tobytes()


def _find_aligned(haystack: bytes, needle: bytes) -> bool:
    start = haystack.find(needle)
    while start != -1:
        if start % 2 == 0:
            return True
        start = haystack.find(needle, start + 1)
    return False


@dataclass
class RtpSink(asyncio.DatagramProtocol):
    """Collects RTP payloads by sequence number."""

    packets: dict[int, bytes] = field(default_factory=dict)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= offset + 4:  # header extension
            offset += 4 + 4 * int.from_bytes(data[offset + 2:offset + 4], "big")
        self.packets[int.from_bytes(data[2:4], "big")] = data[offset:]

    def audio(self) -> bytes:
        """The payloads in sequence order (a short capture: no wrap-around handling needed
        beyond starting at the lowest number after a wrap)."""
        seqs = sorted(self.packets)
        if seqs and seqs[-1] - seqs[0] > 30000:  # wrapped during the capture
            seqs = sorted(seqs, key=lambda s: (s < 30000, s))
        return b"".join(self.packets[s] for s in seqs)


def _local_address(host: str, port: int) -> tuple[int, str]:
    """(address family, this host's address that reaches ``host``) — where Asterisk can send RTP."""
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect(sockaddr)
        return family, probe.getsockname()[0]


class ProbeChannel:
    """An ARI external media channel of doctor's own, in a temporary Stasis application, whose
    audio arrives as RTP (slin16) on a local UDP port."""

    def __init__(self, ari: AriClient, settings: Settings) -> None:
        self.ari = ari
        self.settings = settings
        self.app = f"ooma-moh-doctor-{os.getpid()}"
        self.sink = RtpSink()
        self.channel_id = ""
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._transport: asyncio.DatagramTransport | None = None

    async def __aenter__(self) -> ProbeChannel:
        try:
            await self._open()
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _open(self) -> None:
        parts = urlsplit(self.settings.ari_url)
        family, address = _local_address(parts.hostname or "127.0.0.1", parts.port or 80)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind((address, 0))
            transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: self.sink, sock=sock)
        except BaseException:
            sock.close()
            raise
        self._transport = transport
        port = sock.getsockname()[1]
        host = f"[{address}]" if family == socket.AF_INET6 else address
        ws_url = self.ari.base_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        try:
            self._ws = await self.ari.session.ws_connect(f"{ws_url}/events?app={self.app}&subscribeAll=false")
        except (aiohttp.ClientError, OSError) as exc:
            raise AsteriskError(f"the ARI events WebSocket cannot be opened: {exc}") from None
        await self._registered()
        channel = await self.ari.request("POST", "/channels/externalMedia", app=self.app,
                                         external_host=f"{host}:{port}", format="slin16",
                                         encapsulation="rtp", transport="udp", direction="both")
        self.channel_id = channel["id"]
        await self._wait_event("StasisStart")

    async def _registered(self, timeout: float = ARI_TIMEOUT_S) -> None:
        """Wait until Asterisk lists the application (it registers it just after the handshake)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                await self.ari.get_application(self.app)
                return
            except AriRequestFailed as exc:
                if exc.status != 404 or time.monotonic() > deadline:
                    raise
            await asyncio.sleep(0.05)

    async def _wait_event(self, kind: str, timeout: float = ARI_TIMEOUT_S) -> None:
        assert self._ws is not None
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = await self._ws.receive(timeout=remaining)
            except TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.TEXT:
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                    break
                continue
            event = json.loads(message.data)
            if event.get("type") == kind and (event.get("channel") or {}).get("id") == self.channel_id:
                return
        raise AsteriskError(f"doctor's channel did not reach its Stasis application ({kind} missing)")

    async def read(self, expression: str) -> str | None:
        """A dialplan function evaluated on the channel; None when Asterisk cannot evaluate it
        (500; for REALTIME: no row found)."""
        try:
            body = await self.ari.request("GET", f"/channels/{self.channel_id}/variable", variable=expression)
        except AriRequestFailed as exc:
            if exc.status == 500:
                return None
            raise
        return (body or {}).get("value")

    async def listen(self, moh_class: str, seconds: float = LISTEN_S) -> bytes:
        """Start MOH ``moh_class`` on the channel and return the audio received meanwhile
        (big-endian slin16)."""
        self.sink.packets.clear()
        await self.ari.request("POST", f"/channels/{self.channel_id}/moh", mohClass=moh_class)
        await asyncio.sleep(seconds)
        with contextlib.suppress(OomaMohError):
            await self.ari.request("DELETE", f"/channels/{self.channel_id}/moh")
        return self.sink.audio()

    async def close(self) -> None:
        if self.channel_id:
            with contextlib.suppress(OomaMohError):
                await self.ari.request("DELETE", f"/channels/{self.channel_id}")
            self.channel_id = ""
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._ws.close(), 2.0)
            self._ws = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None


@contextlib.contextmanager
def probe_row(settings: Settings, name: str, directory: Path) -> Iterator[None]:
    """A musiconhold row ``name`` -> ``directory`` in the realtime database, removed afterwards.
    The database is never created here (``OomaMohError`` if it is missing)."""
    def connect() -> sqlite3.Connection:
        return sqlite3.connect(f"file:{settings.realtime_db}?mode=rw", uri=True, timeout=10, isolation_level=None)

    try:
        db = connect()
        try:
            db.execute(REALTIME_SCHEMA)
            db.execute("INSERT OR REPLACE INTO musiconhold (name, mode, directory, sort, stamp)"
                       " VALUES (?, 'files', ?, 'alpha', ?)", (name, str(directory), int(time.time())))
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise OomaMohError(f"cannot write a probe row into {settings.realtime_db}: {exc}") from None
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error), contextlib.closing(connect()) as db:
            db.execute("DELETE FROM musiconhold WHERE name = ?", (name,))


@contextlib.contextmanager
def probe_directory(settings: Settings) -> Iterator[tuple[Path, bytes]]:
    """``<moh_dir>/.doctor-<pid>`` with the probe audio as ``moh.sln16`` and ``moh.sln`` (0755 and
    0644, as sync makes them); a dot-name, so sync's clean-up leaves it alone. Removed afterwards."""
    directory = settings.moh_dir / f".doctor-{os.getpid()}"
    audio = probe_audio()
    narrow = array.array("h")
    narrow.frombytes(audio)
    settings.moh_dir.mkdir(parents=True, exist_ok=True)
    try:
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o755)
        for name, data in (("moh.sln16", audio), ("moh.sln", narrow[::2].tobytes())):
            (directory / name).write_bytes(data)
            os.chmod(directory / name, 0o644)
        yield directory, audio
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _not_checked(name: str, why: str) -> Finding:
    return Finding(name, WARN, f"not checked: {why}", "fix the failure above, then run doctor again")


async def check_asterisk(settings: Settings, call: bool) -> tuple[dict[str, Any] | None, list[Finding]]:
    """ARI, modules, the realtime mapping and (``call``) a played class; also ARI's
    ``/asterisk/info`` for :func:`asterisk_user`."""
    realtime = settings.publish_mode == "realtime"
    later = (["realtime-mapping"] if realtime else []) + (["call"] if call else [])
    async with AriClient(settings.ari_url, settings.ari_user, settings.ari_password, timeout=ARI_TIMEOUT_S,
                         max_connections=4) as ari:
        try:
            info = await ari.request("GET", "/asterisk/info")
        except OomaMohError as exc:
            return None, [ari_failure(settings, exc), _not_checked("modules", "ARI unavailable"),
                          *(_not_checked(name, "ARI unavailable") for name in later)]
        system = (info or {}).get("system") or {}
        findings = [Finding("ari", OK, f"ARI at {settings.ari_url} answers user {settings.ari_user!r}"
                            f" (Asterisk {system.get('version', '?')})")]
        try:
            modules = await ari.request("GET", "/asterisk/modules") or []
        except OomaMohError as exc:
            return info, [*findings, Finding("modules", FAIL, f"cannot list Asterisk's modules: {one_line(str(exc))}",
                                             "load res_ari_asterisk.so"),
                          *(_not_checked(name, "modules unknown") for name in later)]
        running = {m.get("name", "") for m in modules if m.get("status") == "Running"}
        findings.append(check_modules(settings, running))
        if not later:
            return info, findings
        needs = {"res_stasis.so", "res_ari_channels.so", "res_ari_events.so", "res_http_websocket.so", *CALL_MODULES}
        if absent := sorted(needs - running):
            return info, [*findings, *(_not_checked(name, f"doctor's probe channel needs {', '.join(absent)}")
                                       for name in later)]
        findings += await _probe_checks(ari, settings, call, running)
    return info, findings


async def _probe_checks(ari: AriClient, settings: Settings, call: bool, running: set[str]) -> list[Finding]:
    realtime = settings.publish_mode == "realtime"
    findings: list[Finding] = []
    try:
        async with ProbeChannel(ari, settings) as channel:
            if realtime:
                findings += await _realtime_checks(channel, settings, call, running)
            elif call:
                findings.append(await _static_call(channel, settings))
    except OomaMohError as exc:
        names = (["realtime-mapping"] if realtime else []) + (["call"] if call else [])
        findings += [Finding(name, FAIL, f"doctor's probe channel failed: {one_line(str(exc))}",
                             "look at Asterisk's log; the ARI user needs read_only=no in ari.conf")
                     for name in names if name not in {f.check for f in findings}]
    return findings


async def _realtime_checks(channel: ProbeChannel, settings: Settings, call: bool, running: set[str]) -> list[Finding]:
    name = probe_name()
    findings: list[Finding] = []
    if not settings.realtime_db.exists():
        findings.append(_not_checked("realtime-mapping", f"{settings.realtime_db} does not exist"))
        if call:
            findings.append(_not_checked("call", f"{settings.realtime_db} does not exist"))
        return findings
    with contextlib.ExitStack() as stack:
        if call:
            directory, audio = stack.enter_context(probe_directory(settings))
        else:
            directory, audio = settings.moh_dir / f".doctor-{os.getpid()}", b""
        stack.enter_context(probe_row(settings, name, directory))
        if "func_realtime.so" not in running:
            findings.append(Finding("realtime-mapping", WARN, "not checked: func_realtime.so is not loaded",
                                    "`module load func_realtime.so` to let doctor check the mapping"))
        else:
            seen = await channel.read(f"REALTIME(musiconhold,name,{name})")
            if seen is None or f"directory={directory}" not in seen:
                findings.append(Finding(
                    "realtime-mapping", FAIL,
                    f"Asterisk does not see the probe row doctor wrote into {settings.realtime_db}: the realtime"
                    " mapping of musiconhold is missing, or res_config_sqlite3 reads another file; every tenant's"
                    " callers hear the default class",
                    "put `musiconhold => sqlite3,ooma-moh,musiconhold` in extconfig.conf's [settings] and"
                    f" `dbfile => {settings.realtime_db}` in res_config_sqlite3.conf's [ooma-moh], then"
                    " `module reload extconfig` (or `core restart when convenient`)"))
            else:
                findings.append(Finding("realtime-mapping", OK, f"Asterisk reads musiconhold rows from"
                                        f" {settings.realtime_db} (a probe row was found through REALTIME())"))
        if call:
            findings.append(await _call(channel, name, audio, "the probe class"))
    return findings


async def _static_call(channel: ProbeChannel, settings: Settings) -> Finding:
    published = StaticPublisher(settings.classes_conf, settings.class_prefix).current()
    if not published:
        return Finding("call", WARN, f"not checked: no class is published in {settings.classes_conf} yet (static"
                       " mode plays a published class; a probe class would need a reload)",
                       "run `ooma-moh sync --all` after the first upload, then `ooma-moh doctor --call`")
    moh_class, directory = sorted(published.items())[0]
    try:
        reference = (Path(directory) / "moh.sln16").read_bytes()
    except OSError as exc:
        return Finding("call", FAIL, f"{directory}/moh.sln16 of class {moh_class} cannot be read: {exc.strerror}",
                       "run `ooma-moh sync --all`, then `ooma-moh verify`")
    return await _call(channel, moh_class, reference, "the first published tenant class")


async def _call(channel: ProbeChannel, moh_class: str, reference: bytes, what: str) -> Finding:
    received = await channel.listen(moh_class)
    verdict, detail = heard_verdict(received, reference)
    if verdict == "match":
        return Finding("call", OK, f"Asterisk plays {what} ({moh_class}) to a channel: {detail}")
    if verdict == "silence":
        return Finding("call", FAIL, f"a channel playing {what} ({moh_class}) heard silence: {detail}",
                       "check that Asterisk can read the class's files (moh-dir above) and Asterisk's log for"
                       " res_musiconhold warnings; callers may hear silence")
    return Finding("call", FAIL, f"a channel playing {what} ({moh_class}) heard other music: {detail}, i.e. the"
                   " class falls back to default",
                   "fix the findings above (realtime mapping, moh-dir); static mode: `ooma-moh sync --all` and"
                   " check that musiconhold.conf #includes OOMA_MOH_CLASSES_CONF; then `ooma-moh verify`")


# -- the runner and the command ------------------------------------------------------------------

def run_checks(settings: Settings, *, call: bool = False) -> list[Finding]:
    """Every check, in the order they are printed."""
    findings = _guarded("ffmpeg", lambda: check_ffmpeg(settings))
    findings += _guarded("catalog", lambda: check_storage(settings))
    facts: list[dict[str, Any] | None] = [None]

    def run_asterisk() -> list[Finding]:
        facts[0], found = asyncio.run(check_asterisk(settings, call))
        return found

    asterisk_findings = _guarded("ari", run_asterisk)
    by_name = {f.check: f for f in asterisk_findings}
    findings += [f for f in asterisk_findings if f.check in ("ari", "modules")]
    who = asterisk_user(settings, facts[0])
    findings += _guarded("moh-dir", lambda: check_moh_dir(settings, who))
    if settings.publish_mode == "realtime":
        findings += _guarded("realtime-db", lambda: check_realtime_db(settings, who))
    findings += [by_name[name] for name in ("realtime-mapping", "call") if name in by_name]
    return findings


def exit_status(findings: Iterable[Finding]) -> int:
    """0 when nothing failed (warnings allowed), else 1."""
    return 1 if any(f.status == FAIL for f in findings) else 0


@click.command("doctor")
@click.option("--call", is_flag=True,
              help="Also have Asterisk play a class to a probe channel and check the audio sample for sample.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def doctor_command(ctx: click.Context, call: bool, as_json: bool) -> None:
    """Check ffmpeg, the catalog and blobs, the MOH directory, and Asterisk (ARI, modules, realtime
    mapping); one line per finding with what to do. Exit 0 when nothing failed."""
    settings: Settings = ctx.obj
    try:
        findings = run_checks(settings, call=call)
    except OomaMohError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([f.as_dict() for f in findings], indent=2, sort_keys=True))
    else:
        click.echo("\n".join(f.line() for f in findings))
    ctx.exit(exit_status(findings))
