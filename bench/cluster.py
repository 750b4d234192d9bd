"""Cluster benchmark: one PostgreSQL catalog and one S3 bucket (the test suite's throwaway
servers: Debian's PostgreSQL, SeaweedFS), agents publishing into throwaway realtime databases (no
Asterisk).

1. change -> live on every node: an upload's catalog commit until every agent's realtime
   database names the new version (p50/p99 of ``--runs``), with ``--agents`` agent processes
   (default 2; try 50); what each agent spends per change: CPU (user + system, all its threads,
   from ``/proc/PID/stat``; goal <= 20 ms) and catalog transactions
   (``pg_stat_database.xact_commit`` over the changes, less the uploader's own, measured alone
   before the agents start; goal <= 3); the floor is one agent (``--agents 1``). With ``--lab``
   the two agents are on two real lab Asterisk nodes instead, and after the last change a caller
   on each node is recorded (the share of 100 ms windows carrying the last file's tone);
2. a cold node catching up ``--tenants`` tenants (each with its own 5 renditions of ~5 kB, written
   directly to the catalog and the bucket): one full sync of an empty node (tenants/s, bytes/s),
   against the floor: a bare parallel download of the same objects with the same client library
   in the same run (boto3, 8 threads, one ``get_object`` per object written to a file; with
   ``--bare-download-file`` also boto3's ``download_file``, the floor before 2026-12-04, which
   sends a HEAD before each GET). Goal: ratio <= 1.2.

    .venv/bin/python bench/cluster.py [--agents 2 | --lab] [--runs 10] [--tenants 1000] [--skip-cold | --skip-change]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ooma_moh.app import build_service, create_catalog, make_agent, open_blobs, open_catalog  # noqa: E402
from ooma_moh.config import Settings  # noqa: E402
from ooma_moh.lab import LabAsterisk  # noqa: E402
from ooma_moh.model import RENDITION_FORMATS, Disclaimer, Rendition, UploadedFile  # noqa: E402
from tests.audio import tone  # noqa: E402
from tests.integration.conftest import running_lab, tones_heard  # noqa: E402
from tests.integration.test_cluster import Node  # noqa: E402
from tests.postgres import postgres_server  # noqa: E402
from tests.s3server import CREDENTIALS, s3_server  # noqa: E402


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def commits(url: str) -> int:
    """The database's committed transactions so far (backends report theirs within a second of
    going idle: read after :data:`STATS_SETTLE_S`); this reading's own is not counted."""
    time.sleep(STATS_SETTLE_S)
    with psycopg.connect(url, autocommit=True) as db:
        row = db.execute("SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()").fetchone()
        return int(row[0]) if row else 0


STATS_SETTLE_S = 1.5


class OwnTransactions:
    """The transactions this process (the uploader) runs on PostgreSQL, counted as the server
    counts them in ``xact_commit``: each statement outside a transaction block (the catalog's
    connections are in autocommit), and each transaction block; the agents' are the rest."""

    def __init__(self) -> None:
        self.count = 0
        execute, executemany, enter = psycopg.Cursor.execute, psycopg.Cursor.executemany, psycopg.Transaction.__enter__
        idle = psycopg.pq.TransactionStatus.IDLE

        def alone(cursor: psycopg.Cursor[Any]) -> None:
            if cursor.connection.autocommit and cursor.connection.info.transaction_status == idle:
                self.count += 1

        def counted_execute(cursor: psycopg.Cursor[Any], *args: Any, **kwargs: Any) -> Any:
            alone(cursor)
            return execute(cursor, *args, **kwargs)

        def counted_executemany(cursor: psycopg.Cursor[Any], *args: Any, **kwargs: Any) -> Any:
            alone(cursor)
            return executemany(cursor, *args, **kwargs)

        def counted_enter(transaction: psycopg.Transaction) -> psycopg.Transaction:
            if transaction.connection.info.transaction_status == idle:
                self.count += 1
            return enter(transaction)

        psycopg.Cursor.execute = counted_execute  # type: ignore[method-assign,assignment]
        psycopg.Cursor.executemany = counted_executemany  # type: ignore[method-assign,assignment]
        psycopg.Transaction.__enter__ = counted_enter  # type: ignore[method-assign,assignment]


OWN = OwnTransactions()
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, every thread) the process ``pid`` has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14 and 15)


def change_to_live(host: Settings, tmp: Path, agents: int, runs: int, labs: list[LabAsterisk]) -> None:
    tmp.mkdir(parents=True, exist_ok=True)
    nodes = []
    for i in range(len(labs) or agents):
        node_local = labs[i].settings_overrides() if labs else {"home": tmp / f"node{i}"}
        nodes.append(
            Node(
                Settings(
                    **node_local,
                    node_id=f"node{i}",
                    database_url=host.database_url,
                    blob_url=host.blob_url,
                    s3_endpoint_url=host.s3_endpoint_url,
                    agent_reconcile_s=3600.0,
                    publish_mode="realtime",
                )
            )
        )
    agents = len(nodes)
    for node in nodes:
        node.start()
    try:
        deadline = time.monotonic() + 120
        while sum(1 for n in nodes if n.settings.realtime_db.exists()) < agents:  # every agent's first sync
            assert all(n.alive() for n in nodes) and time.monotonic() < deadline, "agents did not start"
            time.sleep(0.2)
        time.sleep(1.0)
        samples = [tone(tmp / f"run{r}.mp3", 300 + 40 * r, 3, "mp3") for r in range(runs)]
        last_freq = 300.0 + 40 * (runs - 1)
        service = build_service(host)
        lags = []
        pids = [n.proc.pid for n in nodes if n.proc is not None]
        own_before = OWN.count  # this process's (the uploader's) transactions, the reading's included
        before, cpu_before = commits(host.database_url), [cpu_s(pid) for pid in pids]
        try:
            for sample in samples:
                tenant = service.upload("acme", sample, accept_disclaimer=True, accepted_by="bench")
                committed = time.monotonic()
                for node in nodes:
                    node.wait_for({"tenant-acme": tenant.version}, timeout=120, since=committed)
                lags.append(time.monotonic() - committed)
        finally:
            service.catalog.close()
        cpu_after = [cpu_s(pid) for pid in pids]
        uploader = (OWN.count - own_before) / runs
        per_change = (commits(host.database_url) - before) / runs
        per_agent = (per_change - uploader) / agents
        cpu = sorted((a - b) / runs * 1000 for a, b in zip(cpu_after, cpu_before, strict=True))
        heard = [
            tones_heard(lab.record(f"bench_cluster_node{i}", 2, "tenant-acme"), [last_freq])[1:]
            for i, lab in enumerate(labs)
        ]
    finally:
        for node in nodes:
            node.stop()
    print(
        f"{agents} agents, {runs} changes: catalog commit -> live on every node p50 {p(lags, 50) * 1000:.0f} ms,"
        f" p99 {p(lags, 99) * 1000:.0f} ms; catalog transactions per change {per_change:.1f} (the uploader"
        f" {uploader:.1f}, each agent {per_agent:.2f}: goal <= 3)"
    )
    print(
        f"CPU per agent per change: median {statistics.median(cpu):.1f} ms, max {cpu[-1]:.1f} ms"
        f" (goal <= 20 ms; {len(os.sched_getaffinity(0))} cores for {agents} agents)"
    )
    for i, windows in enumerate(heard):
        right = sum(1 for w in windows if w == last_freq) / len(windows)
        print(f"lab node{i}: a caller held after the last change hears its tone in {right:.0%} of 100 ms windows")


def cold_node(host: Settings, tmp: Path, tenants: int, download_file: bool) -> None:
    blobs = open_blobs(host)
    catalog = open_catalog(host)
    now = datetime.now(UTC)
    total = 0
    try:
        for t in range(tenants):
            renditions = []
            with blobs.scratch() as work:
                for fmt in RENDITION_FORMATS:
                    data = hashlib.sha256(f"{t}-{fmt.extension}".encode()).digest() * 160  # 5,120 bytes
                    (work / fmt.extension).write_bytes(data)
                    sha, size = blobs.put(work / fmt.extension)
                    renditions.append(Rendition(fmt.extension, fmt.sample_rate, size, sha))
                    total += size
            sha = renditions[0].sha256
            catalog.save_upload(
                f"t{t:05d}",
                UploadedFile("x.wav", 1, sha, 1000, "wav", now),
                Disclaimer("bench", now, sha),
                tuple(renditions),
            )
    finally:
        catalog.close()
    keys = [blobs.key(r) for r in catalog_shas(host)]  # type: ignore[attr-defined]
    cold = Settings(
        home=tmp / "cold",
        node_id="cold",
        database_url=host.database_url,
        blob_url=host.blob_url,
        s3_endpoint_url=host.s3_endpoint_url,
    )
    start = time.perf_counter()
    make_agent(cold, "cold").sync(None)
    ours = time.perf_counter() - start
    client = blobs.client  # type: ignore[attr-defined]
    bucket = blobs.bucket  # type: ignore[attr-defined]

    def get(key: str, into: Path) -> None:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with body, open(into / key.rsplit("/", 1)[1], "wb") as fh:
            for chunk in body.iter_chunks(1 << 20):
                fh.write(chunk)

    bare = bare_download(tmp / "bare", keys, get)
    print(
        f"cold node, {tenants} tenants ({len(keys)} objects, {total / 1e6:.1f} MB): full sync {ours:.1f} s"
        f" ({tenants / ours:.0f} tenants/s, {total / ours / 1e6:.2f} MB/s); floor, a bare parallel download"
        f" (get_object) {bare:.1f} s ({total / bare / 1e6:.2f} MB/s); ratio ours/floor {ours / bare:.2f} (goal <= 1.2)"
    )
    if download_file:
        old = bare_download(
            tmp / "bare-df", keys, lambda k, into: client.download_file(bucket, k, str(into / k.rsplit("/", 1)[1]))
        )
        print(f"  bare download_file (HEAD + GET) {old:.1f} s: ratio ours/that {ours / old:.2f}")


def bare_download(into: Path, keys: list[str], fetch: Callable[[str, Path], None]) -> float:
    """Seconds to fetch every key with ``fetch(key, into)``, 8 threads."""
    into.mkdir()
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda k: fetch(k, into), keys))
    return time.perf_counter() - start


def catalog_shas(host: Settings) -> list[str]:
    catalog = open_catalog(host, writable=False)
    try:
        return sorted({r.sha256 for t in catalog.list() for r in t.renditions})
    finally:
        catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--lab", action="store_true", help="two real lab Asterisk nodes for the change -> live part")
    parser.add_argument("--skip-cold", action="store_true", help="only the change -> live part")
    parser.add_argument("--skip-change", action="store_true", help="only the cold node part")
    parser.add_argument("--bare-download-file", action="store_true", help="also time boto3's download_file")
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="ooma-moh-cluster-"))
        pg, s3 = stack.enter_context(postgres_server()), stack.enter_context(s3_server())
        labs = [stack.enter_context(running_lab(Path(tmp) / f"lab{i}")) for i in range(2 if args.lab else 0)]
        for step in [s for s in ("change", "cold") if not getattr(args, f"skip_{s}")]:
            home = Path(tmp) / f"host-{step}"
            host = Settings(
                home=home, database_url=pg.database(), blob_url=f"s3://{s3.bucket()}/moh", s3_endpoint_url=s3.endpoint
            )
            create_catalog(host)
            if step == "change":
                change_to_live(host, Path(tmp) / step, args.agents, args.runs, labs)
            else:
                cold_node(host, Path(tmp) / step, args.tenants, args.bare_download_file)


if __name__ == "__main__":
    main()
