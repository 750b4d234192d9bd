"""Doctor's checks of Asterisk over ARI: ``ari`` (the REST interface answers with the configured
user and password), ``modules`` (``GET /asterisk/modules``), ``realtime-mapping`` (realtime
mode) and ``call`` (``--call``, see :mod:`.call`).

The realtime mapping is checked through ``REALTIME(musiconhold,...)`` evaluated on doctor's
probe channel: Asterisk must find a probe row doctor wrote into ``OOMA_MOH_REALTIME_DB`` — the
extconfig mapping is in place *and* res_config_sqlite3 reads this very file. The probe row is
removed before doctor exits."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..ari.client import AriClient
from ..config import Settings
from ..errors import OomaMohError
from ..publish import REALTIME_SCHEMA, not_writable
from .call import check_call, check_static_call, probe_directory, probe_path
from .channel import ARI_TIMEOUT_S, ProbeChannel
from .findings import (
    CALL_MODULES,
    FAIL,
    OK,
    WARN,
    Finding,
    ari_failure,
    check_modules,
    how_to_publish,
    not_checked,
    one_line,
)


def probe_name() -> str:
    """The probe class's name: with a dot, which no tenant class can contain, so `sync` never
    takes it for one of its own."""
    return f"ooma-moh.doctor.{os.getpid()}"


class ProbeRowFailed(OomaMohError):
    """Doctor could not write its probe row into the realtime database (this user cannot write
    it, or it is damaged): nothing to do with ARI or the probe channel."""


@contextlib.contextmanager
def probe_row(settings: Settings, name: str, directory: Path) -> Iterator[None]:
    """A musiconhold row ``name`` -> ``directory`` in the realtime database, removed afterwards,
    with the ``musiconhold`` table if doctor had to create it (and nobody wrote a row meanwhile).
    The database is never created here (:class:`ProbeRowFailed` if it is missing or cannot be
    written)."""

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(f"file:{settings.realtime_db}?mode=rw", uri=True, timeout=10, isolation_level=None)

    try:
        with contextlib.closing(connect()) as db:  # an open transaction is rolled back on close
            db.execute("BEGIN IMMEDIATE")
            found = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'musiconhold'")
            had_table = found.fetchone() is not None
            db.execute(REALTIME_SCHEMA)
            db.execute(
                "INSERT OR REPLACE INTO musiconhold (name, mode, directory, sort, stamp)"
                " VALUES (?, 'files', ?, 'alpha', ?)",
                (name, str(directory), int(time.time())),
            )
            db.execute("COMMIT")
    except sqlite3.Error as exc:
        raise ProbeRowFailed(f"cannot write a probe row into {settings.realtime_db}: {exc}") from None
    try:
        yield
    finally:
        with contextlib.suppress(sqlite3.Error), contextlib.closing(connect()) as db:
            db.execute("BEGIN IMMEDIATE")
            db.execute("DELETE FROM musiconhold WHERE name = ?", (name,))
            if not had_table and db.execute("SELECT count(*) FROM musiconhold").fetchone()[0] == 0:
                db.execute("DROP TABLE musiconhold")
            db.execute("COMMIT")


def _probe_check_names(settings: Settings, call: bool) -> list[str]:
    """The checks that need doctor's probe channel, in the order they are printed."""
    return (["realtime-mapping"] if settings.publish_mode == "realtime" else []) + (["call"] if call else [])


async def check_asterisk(settings: Settings, call: bool) -> tuple[dict[str, Any] | None, list[Finding]]:
    """ARI, modules, the realtime mapping and (``call``) a played class; also ARI's
    ``/asterisk/info`` for :func:`.permissions.asterisk_user`."""
    later = _probe_check_names(settings, call)
    async with AriClient(
        settings.ari_url, settings.ari_user, settings.ari_password, timeout=ARI_TIMEOUT_S, max_connections=4
    ) as ari:
        try:
            info = await ari.request("GET", "/asterisk/info")
        except OomaMohError as exc:
            return None, [
                ari_failure(settings, exc),
                not_checked("modules", "ARI unavailable"),
                *(not_checked(name, "ARI unavailable") for name in later),
            ]
        system = (info or {}).get("system") or {}
        findings = [
            Finding(
                "ari",
                OK,
                f"ARI at {settings.ari_url} answers user {settings.ari_user!r} (Asterisk {system.get('version', '?')})",
            )
        ]
        try:
            modules = await ari.request("GET", "/asterisk/modules") or []
        except OomaMohError as exc:
            return info, [
                *findings,
                Finding(
                    "modules", FAIL, f"cannot list Asterisk's modules: {one_line(str(exc))}", "load res_ari_asterisk.so"
                ),
                *(not_checked(name, "modules unknown") for name in later),
            ]
        running = {m.get("name", "") for m in modules if m.get("status") == "Running"}
        findings.append(check_modules(settings, running))
        if not later:
            return info, findings
        needs = {"res_stasis.so", "res_ari_channels.so", "res_ari_events.so", "res_http_websocket.so", *CALL_MODULES}
        if absent := sorted(needs - running):
            return info, [
                *findings,
                *(not_checked(name, f"doctor's probe channel needs {', '.join(absent)}") for name in later),
            ]
        findings += await _probe_checks(ari, settings, call, running)
    return info, findings


async def _probe_checks(ari: AriClient, settings: Settings, call: bool, running: set[str]) -> list[Finding]:
    """The checks on doctor's probe channel; a channel that fails fails those not yet made."""
    realtime = settings.publish_mode == "realtime"
    findings: list[Finding] = []
    try:
        async with ProbeChannel(ari, settings) as channel:
            if realtime:
                findings += await _realtime_checks(channel, settings, call, running)
            elif call:
                findings.append(await check_static_call(channel, settings))
    except OomaMohError as exc:
        findings += [
            Finding(
                name,
                FAIL,
                f"doctor's probe channel failed: {one_line(str(exc))}",
                "look at Asterisk's log; the ARI user needs read_only=no in ari.conf",
            )
            for name in _probe_check_names(settings, call)
            if name not in {f.check for f in findings}
        ]
    return findings


async def _realtime_checks(channel: ProbeChannel, settings: Settings, call: bool, running: set[str]) -> list[Finding]:
    """Realtime mode: the mapping, and (``call``) the probe class played, with a probe row in place."""
    name = probe_name()
    if not settings.realtime_db.exists():
        return [
            not_checked(check, f"{settings.realtime_db} does not exist") for check in _probe_check_names(settings, call)
        ]
    findings: list[Finding] = []
    with contextlib.ExitStack() as stack:
        if call:
            directory, audio = stack.enter_context(probe_directory(settings))
        else:
            directory, audio = probe_path(settings), b""
        try:
            stack.enter_context(probe_row(settings, name, directory))
        except ProbeRowFailed as exc:
            return [
                _probe_row_failure(settings, exc),
                *(
                    not_checked(check, "doctor could not write its probe row")
                    for check in _probe_check_names(settings, call)
                    if check != "realtime-mapping"
                ),
            ]
        findings.append(await _check_mapping(channel, settings, name, directory, running))
        if call:
            findings.append(await check_call(channel, settings, name, audio, "the probe class"))
    return findings


def _probe_row_failure(settings: Settings, exc: ProbeRowFailed) -> Finding:
    """``realtime-mapping`` could not be checked: doctor cannot write its probe row."""
    db = settings.realtime_db
    problem = (
        not_writable(db) or not_writable(db.with_name(db.name + "-wal")) or not_writable(db.with_name(db.name + "-shm"))
    )
    advice = (
        problem[1]
        if problem
        else (
            f"run doctor as the user that publishes the classes, and let it write {db} and its directory;"
            f" a damaged file: remove it, then {how_to_publish(settings)} (it rebuilds it)"
        )
    )
    return Finding(
        "realtime-mapping", FAIL, f"not checked: {one_line(str(exc))}" + (f" ({problem[0]})" if problem else ""), advice
    )


async def _check_mapping(
    channel: ProbeChannel, settings: Settings, name: str, directory: Path, running: set[str]
) -> Finding:
    """Asterisk finds the probe row ``name`` -> ``directory`` through ``REALTIME()``."""
    if "func_realtime.so" not in running:
        return Finding(
            "realtime-mapping",
            WARN,
            "not checked: func_realtime.so is not loaded",
            "`module load func_realtime.so` to let doctor check the mapping",
        )
    seen = await channel.read(f"REALTIME(musiconhold,name,{name})")
    if seen is None or f"directory={directory}" not in seen:
        return Finding(
            "realtime-mapping",
            FAIL,
            f"Asterisk does not see the probe row doctor wrote into {settings.realtime_db}: the realtime"
            " mapping of musiconhold is missing, or res_config_sqlite3 reads another file; every tenant's"
            " callers hear the default class",
            "put `musiconhold => sqlite3,ooma-moh,musiconhold` in extconfig.conf's [settings] and"
            f" `dbfile => {settings.realtime_db}` in res_config_sqlite3.conf's [ooma-moh], then"
            " `module reload extconfig` (or `core restart when convenient`)",
        )
    return Finding(
        "realtime-mapping",
        OK,
        f"Asterisk reads musiconhold rows from {settings.realtime_db} (a probe row was found through REALTIME())",
    )
