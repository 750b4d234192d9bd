"""Doctor's checks of what Asterisk may read: who Asterisk runs as, and whether that user may read
the MOH directory tree (``moh-dir``) and read and write the realtime database (``realtime-db``).

Asterisk's user is the process listening on the ARI port (``/proc``), else ``runuser`` as ARI's
``GET /asterisk/info`` reports it, else a local user ``asterisk``; if none is known the
permission bits for "other" are checked. The bits are judged for that user's uid and groups,
including every directory above (root's power to ignore them is deliberately not counted: a tree
only root can read breaks when Asterisk runs as its own user, as Debian's package does)."""

from __future__ import annotations

import contextlib
import grp
import ipaddress
import os
import pwd
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings
from ..publish import not_writable
from .findings import FAIL, OK, WARN, AsteriskUser, Finding, how_to_publish, lacking

# -- Asterisk's user -----------------------------------------------------------------------------


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


# -- file permissions ----------------------------------------------------------------------------


def denial(path: Path, st: os.stat_result, who: AsteriskUser, need: int) -> str | None:
    """Why ``who`` may not ``need`` (bits: 4 read, 2 write, 1 search/execute) on ``path``, or None."""
    names = lacking(st, who, need)
    if not names:
        return None
    return (
        f"{path} (mode {stat.S_IMODE(st.st_mode):04o}, owner {_user_name(st.st_uid)}, group {st.st_gid})"
        f" denies {'+'.join(names)}"
    )


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
    advice = (
        f"make {root} and the directories above it searchable and readable by Asterisk's user: directories"
        " 0755, files 0644 (what `ooma-moh sync` makes), or chgrp them to Asterisk's group"
    )
    if not root.exists():
        existing = next((p for p in root.parents if p.exists()), Path("/"))
        if problem := path_denial(existing / "x", who):
            return [
                Finding(
                    "moh-dir",
                    FAIL,
                    f"{root} does not exist yet, and Asterisk ({who.label}) could not reach it: {problem}",
                    advice,
                )
            ]
        return [
            Finding(
                "moh-dir",
                WARN,
                f"{root} does not exist yet: no class was ever published from this home",
                f"{how_to_publish(settings)}: it creates it; or check OOMA_MOH_MOH_DIR / OOMA_MOH_HOME",
            )
        ]
    st = root.stat()
    if not stat.S_ISDIR(st.st_mode):
        return [Finding("moh-dir", FAIL, f"{root} is not a directory", "remove it, or set OOMA_MOH_MOH_DIR")]
    problem = path_denial(root, who) or denial(root, st, who, 5)
    if problem:
        return [
            Finding(
                "moh-dir",
                FAIL,
                f"Asterisk ({who.label}) cannot read {root}: {problem}; callers of every tenant hear the default class",
                advice,
            )
        ]
    problems = list(_walk_denials(root, who))
    if problems:
        return [
            Finding(
                "moh-dir",
                FAIL,
                f"Asterisk ({who.label}) cannot read {len(problems)} entries under {root},"
                f" e.g. {problems[0]}; those tenants' callers hear the default class",
                advice,
            )
        ]
    classes = sum(1 for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    return [
        Finding(
            "moh-dir",
            OK,
            f"{root}: {classes} class director{'y' if classes == 1 else 'ies'}, all readable by Asterisk ({who.label})",
        )
    ]


def check_realtime_db(settings: Settings, who: AsteriskUser) -> list[Finding]:
    """Realtime mode: Asterisk's user can read and write the realtime database (SQLite readers
    write the WAL index), and so can the user running doctor (the user that runs ``sync``)."""
    db = settings.realtime_db
    advice = (
        f"let Asterisk's user read and write {db}, its -wal and -shm files and write its directory, e.g."
        f" `chgrp asterisk {db.parent}; chmod 2770 {db.parent}` (the data home's mode, docs/operations.md;"
        " Asterisk's user in group asterisk)"
    )
    if not db.exists():
        return [
            Finding(
                "realtime-db",
                FAIL,
                f"{db} does not exist: Asterisk cannot be reading it",
                f"{how_to_publish(settings)}: it creates it; make res_config_sqlite3.conf's dbfile this"
                " path (OOMA_MOH_REALTIME_DB), then `module reload res_config_sqlite3.so`",
            )
        ]
    if own := _own_write_problem(db):
        return [
            Finding(
                "realtime-db",
                FAIL,
                f"this user (uid {os.geteuid()}) cannot write {db}, so `sync` cannot publish: {own[0]}",
                own[1],
            )
        ]
    problems = [p for p in (path_denial(db, who), denial(db, db.stat(), who, 6)) if p]
    for side in (db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if side.exists():
            problems += [p for p in (denial(side, side.stat(), who, 6),) if p]
        elif problem := denial(db.parent, db.parent.stat(), who, 3):
            problems.append(f"{problem} ({side.name} must be created there)")
    if problems:
        return [Finding("realtime-db", FAIL, f"Asterisk ({who.label}) cannot use {db}: {problems[0]}", advice)]
    return [
        Finding(
            "realtime-db",
            OK,
            f"{db} readable and writable by Asterisk ({who.label}) and by this user (uid {os.geteuid()})",
        )
    ]


def _own_write_problem(db: Path) -> tuple[str, str] | None:
    """(what, what to do) when the user running doctor cannot write the realtime database, its
    -wal/-shm files, or (to create those) its directory; the advice is ``sync``'s own."""
    for path in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if problem := not_writable(path):
            return problem
    sides_missing = not all(db.with_name(db.name + s).exists() for s in ("-wal", "-shm"))
    if sides_missing and not os.access(db.parent, os.W_OK | os.X_OK):
        st = db.parent.stat()
        return (
            f"its directory {db.parent} (mode {stat.S_IMODE(st.st_mode):04o}, owner {_user_name(st.st_uid)})"
            " does not let this user create the -wal/-shm files",
            f"run doctor and sync as the data home's owner, or `chown <ooma-moh user>:asterisk {db.parent};"
            f" chmod 2770 {db.parent}` (docs/operations.md, users and permissions)",
        )
    return None
