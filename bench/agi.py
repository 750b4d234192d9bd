"""FastAGI benchmark: requests/s and latency of `ooma-moh serve agi` at 1, 50, 200 concurrent
connections, against a bare FastAGI server (no catalog, no logic: reads the environment, sends
the same two SET VARIABLE commands) measured in the same run.

Each request is what Asterisk does for `AGI(agi://…/moh)` on a channel whose accountcode names
one of 1,000 tenants: connect, environment block, GET VARIABLE (answered "not set"), two
SET VARIABLE, close. Server and load generator are separate processes (one core each).

Each concurrency level runs ``--rounds`` slices of ours then the bare server, alternating (``--seconds``
per server in all), so load from elsewhere on the machine falls on both alike; the last column is
ours / bare, against the goal (issue 24: at least 0.8 at 1, 50 and 200 connections).

    .venv/bin/python bench/agi.py [--seconds 5] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from ooma_moh.app import build_service
from ooma_moh.config import Settings
from ooma_moh.model import Disclaimer, Rendition, UploadedFile

TENANTS = 1000
LEVELS = (1, 50, 200)
GOAL = 0.8  # ours / bare requests per second, at every level
BARE_SERVER = r"""
import asyncio, sys
async def handle(reader, writer):
    try:
        while (await reader.readline()).strip():
            pass
        for line in (b'GET VARIABLE OOMA_MOH_TENANT\n', b'SET VARIABLE CHANNEL(musicclass) "default"\n',
                     b'SET VARIABLE OOMA_MOH_CLASS "default"\n'):
            writer.write(line)
            await writer.drain()
            await reader.readline()
    except ConnectionError:
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    async with server:
        await server.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def one_request(port: int, tenant: str) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"agi_network: yes\nagi_network_script: moh\nagi_channel: PJSIP/trunk-1\n"
            f"agi_uniqueid: 1.1\nagi_accountcode: {tenant}\nagi_context: from-trunk\n\n"
        ).encode()
    )
    while line := await reader.readline():
        writer.write(b"200 result=0\n" if line.startswith(b"GET") else b"200 result=1\n")
    writer.close()


async def load(port: int, concurrency: int, seconds: float) -> tuple[float, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        i = w
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await one_request(port, f"t{i % TENANTS:04d}")
            latencies.append(time.perf_counter() - start)
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return len(latencies) / (time.perf_counter() - started), latencies


def measure(
    ours_port: int, bare_port: int, concurrency: int, seconds: float, rounds: int
) -> tuple[tuple[float, list[float]], tuple[float, list[float]]]:
    """(req/s, latencies) of ours and of the bare server, over ``rounds`` alternating slices."""
    totals: dict[int, tuple[int, float, list[float]]] = {ours_port: (0, 0.0, []), bare_port: (0, 0.0, [])}
    for _ in range(rounds):
        for port in (ours_port, bare_port):
            rate, lat = asyncio.run(load(port, concurrency, seconds / rounds))
            count, spent, kept = totals[port]
            totals[port] = (count + len(lat), spent + len(lat) / rate, kept + lat)
    (oc, ot, ol), (bc, bt, bl) = totals[ours_port], totals[bare_port]
    return (oc / ot, ol), (bc / bt, bl)


def wait_port(port: int) -> None:
    for _ in range(200):
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"server on {port} did not start")


def make_catalog(home: Path) -> None:
    service = build_service(Settings(home=home))
    now = datetime.now(UTC)
    for i in range(TENANTS):
        if i % 2:  # half on file, half on default
            r = (Rendition("sln", 8000, 1, f"{i:064x}"),)
            service.catalog.save_upload(
                f"t{i:04d}", UploadedFile("x", 1, f"{i:064x}", 1, "wav", now), Disclaimer("bench", now, f"{i:064x}"), r
            )
    service.catalog.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5, help="alternating slices of ours and bare per level")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        make_catalog(home)
        ours_port, bare_port = free_port(), free_port()
        env = {**os.environ, "OOMA_MOH_HOME": str(home)}
        ours = subprocess.Popen(
            [sys.executable, "-m", "ooma_moh", "serve", "agi", "--listen", f"127.0.0.1:{ours_port}"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)])
        try:
            wait_port(ours_port)
            wait_port(bare_port)
            print(
                f"{'conc':>5} {'ours req/s':>11} {'p50 ms':>7} {'p99 ms':>7} | {'bare req/s':>11} {'p50 ms':>7}"
                f" {'p99 ms':>7} | ours/bare (goal >= {GOAL})"
            )
            for concurrency in LEVELS:
                (rate, lat), (brate, blat) = measure(ours_port, bare_port, concurrency, args.seconds, args.rounds)
                p = statistics.quantiles(lat, n=100)
                bp = statistics.quantiles(blat, n=100)
                ratio = rate / brate
                print(
                    f"{concurrency:>5} {rate:>11.0f} {p[49] * 1000:>7.2f} {p[98] * 1000:>7.2f} |"
                    f" {brate:>11.0f} {bp[49] * 1000:>7.2f} {bp[98] * 1000:>7.2f} |"
                    f" {ratio:.2f} {'met' if ratio >= GOAL else 'NOT met'}"
                )
        finally:
            ours.terminate()
            bare.terminate()
            ours.wait()
            bare.wait()


if __name__ == "__main__":
    main()
