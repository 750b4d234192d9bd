"""HTTP API benchmark (no Asterisk: realtime publication into the home's database).

1. change -> live: ``PUT`` of a ~4.8 MB, 300 s MP3 until ``GET`` says ``live`` (p50/p99 of
   ``--runs``), against the CLI path doing the same work in the same run: ``ooma-moh upload``
   then ``ooma-moh sync TENANT`` (two processes, as an operator or a cron job would run them);
2. ``GET …/moh`` requests per second at 1 and 50 concurrent connections, against the floor in the
   same run: a bare aiohttp application (its own process, default settings) whose one handler
   returns the same JSON as a constant; ``--rounds`` alternating rounds of each, medians compared
   (goal: ours / bare >= 0.5 at 50 connections);
3. change -> next GET: another process (this one) deletes and restores a tenant through the
   catalog, and GETs at once until the answer shows it: how many GETs it took and how long from the
   commit (goal: the next GET, within 100 ms);
4. the server's RSS while 10 uploads of 4.8 MB stream at once (it spools to disk: it should not
   grow by the 48 MB in flight).

With ``--lab`` (root; the lab Asterisk) it measures instead, for each path, the time from the
start of the change until a hold on the tenant's class plays it: change -> live (API) or upload
+ sync (CLI), plus Asterisk's own StartMusicOnHold on the new class; every run also records 2 s of
that class and checks the new file's tone is what a caller hears (not ``default``).

    .venv/bin/python bench/api.py [--runs 5] [--rounds 3] [--seconds 2] [--lab]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import wave
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import make_input  # noqa: E402
from ooma_moh.app import service_session  # noqa: E402
from ooma_moh.config import Settings, settings_environ  # noqa: E402
from ooma_moh.lab import DEFAULT_TONE, LabAsterisk, free_port  # noqa: E402
from ooma_moh.lab.tones import classify_windows  # noqa: E402


def cli(env: dict[str, str], *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "ooma_moh", *args], env=env, check=True, capture_output=True, text=True
    ).stdout


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def put(session: aiohttp.ClientSession, url: str, data: bytes) -> int:
    form = aiohttp.FormData()
    form.add_field("file", data, filename="hold.mp3")
    form.add_field("disclaimer", "accepted")
    async with session.put(url, data=form) as r:
        await r.read()
        return r.status


async def until_live(session: aiohttp.ClientSession, url: str) -> None:
    while True:
        async with session.get(url) as r:
            body = await r.json()
        if body["status"]["state"] == "live":
            return
        if body["status"]["state"] == "error":
            raise SystemExit(f"publication failed: {body['status']['reason']}")
        await asyncio.sleep(0.01)


async def gets(session: aiohttp.ClientSession, url: str, concurrency: int, seconds: float) -> float:
    done = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            async with session.get(url) as r:
                await r.read()
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done / (time.perf_counter() - start)


def serve_floor(port: int, body_file: str) -> None:
    """The floor: a bare aiohttp application answering ``GET …/moh`` with a constant JSON."""
    from aiohttp import web

    body = json.loads(Path(body_file).read_text())

    async def constant(_request: web.Request) -> web.Response:
        return web.json_response(body)

    app = web.Application()
    app.router.add_get("/api/v1/tenants/{tenant}/moh", constant)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


def start_floor(body: object, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The floor in a process of its own, answering ``body``; (process, port)."""
    body_file = tmp / "floor.json"
    body_file.write_text(json.dumps(body))
    port = free_port()
    floor = subprocess.Popen([sys.executable, __file__, "--serve-floor", str(port), str(body_file)])
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/tenants/x/moh", timeout=2).close()
            return floor, port
        except OSError:
            if time.monotonic() > deadline:
                floor.kill()
                raise SystemExit("the floor did not start") from None
            time.sleep(0.1)


async def side_by_side(
    session: aiohttp.ClientSession, ours: str, bare: str, rounds: int, seconds: float
) -> dict[int, tuple[float, float]]:
    """connections -> (median req/s of ours, of the floor), rounds alternating between the two."""
    result = {}
    for connections in (1, 50):
        mine, floor = [], []
        for _ in range(rounds):
            mine.append(await gets(session, ours, connections, seconds))
            floor.append(await gets(session, bare, connections, seconds))
        result[connections] = (statistics.median(mine), statistics.median(floor))
    return result


def flip(settings: Settings, tenant: str, to_default: bool) -> float:
    """Delete or restore ``tenant`` through the catalog, as the CLI does; perf_counter at commit."""
    with service_session(settings) as service:
        if to_default:
            service.delete(tenant)
        else:
            service.restore(tenant, accept_disclaimer=True, accepted_by="bench")
        return time.perf_counter()


async def change_to_next_get(
    session: aiohttp.ClientSession, base: str, settings: Settings, changes: int
) -> list[tuple[int, float]]:
    """For each change made by this process: (GETs until one showed it, seconds from the commit)."""
    seen = []
    url = f"{base}/api/v1/tenants/api0/moh"
    for change in range(changes):
        want = "default" if change % 2 == 0 else "file"
        committed = await asyncio.to_thread(flip, settings, "api0", want == "default")
        for count in range(1, 1000):
            async with session.get(url) as r:
                body = await r.json()
            if body["setting"] == want:
                seen.append((count, time.perf_counter() - committed))
                break
        else:
            raise SystemExit("a change was never seen")
        await until_live(session, url)
    return seen


async def measure(
    base: str, token: str, data: bytes, runs: int, pid: int, settings: Settings, args: argparse.Namespace
) -> dict[str, object]:
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        api = []
        for run in range(runs):
            url = f"{base}/api/v1/tenants/api{run}/moh"
            start = time.perf_counter()
            assert await put(session, url, data) == 201
            await until_live(session, url)
            api.append(time.perf_counter() - start)
        url = f"{base}/api/v1/tenants/api0/moh"
        async with session.get(url) as r:
            body = await r.json()
        floor, floor_port = start_floor(body, settings.home.parent)
        try:
            bare = f"http://127.0.0.1:{floor_port}/api/v1/tenants/api0/moh"
            rates = await side_by_side(session, url, bare, args.rounds, args.seconds)
        finally:
            floor.terminate()
            floor.wait(20)
        seen = await change_to_next_get(session, base, settings, args.changes)
        before, peak = rss_mb(pid), 0.0
        uploads = asyncio.gather(*(put(session, f"{base}/api/v1/tenants/many{i}/moh", data) for i in range(10)))
        while not uploads.done():
            peak = max(peak, rss_mb(pid))
            await asyncio.sleep(0.02)
        assert (await uploads) == [201] * 10
        return {"api": api, "rates": rates, "seen": seen, "rss_before": before, "rss_peak": peak}


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen([sys.executable, "-m", "ooma_moh", "serve", "http"], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not healthy(port):
        if time.monotonic() > deadline:
            server.kill()
            raise SystemExit("the server did not start")
        time.sleep(0.1)
    return server


def p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def heard(lab: LabAsterisk, name: str, moh_class: str, freq: float) -> float:
    """Share of 100 ms windows of a 2 s recording of ``moh_class`` that carry ``freq``."""
    with wave.open(str(lab.record(name, 2, moh_class)), "rb") as wav:
        windows = classify_windows(wav.readframes(wav.getnframes()), wav.getframerate(), (DEFAULT_TONE, freq))
    return windows.count(freq) / max(1, len(windows))


def on_lab(runs: int) -> None:
    """API change -> a hold plays it, against CLI upload + sync -> a hold plays it."""
    with tempfile.TemporaryDirectory(prefix="ooma-moh-api-") as tmp, LabAsterisk(Path(tmp) / "lab") as lab:
        port = free_port()
        settings = Settings(**lab.settings_overrides(), http_listen=f"127.0.0.1:{port}")
        env = {**os.environ, **settings_environ(settings)}
        cli(env, "init")
        token = cli(env, "tokens", "create", "--operator").strip().splitlines()[-1]
        sources = {}
        for path_name, freq in (("cli", 660.0), ("api", 440.0)):  # 300 s tones, 128 kbit/s: 4.8 MB
            sources[path_name] = Path(tmp) / f"{path_name}.mp3"
            subprocess.run(
                [
                    "ffmpeg",
                    "-v",
                    "error",
                    "-f",
                    "lavfi",
                    "-i",
                    f"sine=frequency={freq}:duration=300",
                    "-c:a",
                    "libmp3lame",
                    "-b:a",
                    "128k",
                    str(sources[path_name]),
                ],
                check=True,
            )
        cli_live, cli_total, api_live, api_total, shares = [], [], [], [], []
        for run in range(runs):
            start = time.perf_counter()
            cli(env, "upload", f"cli{run}", str(sources["cli"]), "--accept-disclaimer")
            cli(env, "sync", f"cli{run}")
            cli_live.append(time.perf_counter() - start)
            cli_total.append(cli_live[-1] + lab.moh_start_seconds(f"tenant-cli{run}"))
            shares.append(heard(lab, f"bench_cli{run}", f"tenant-cli{run}", 660.0))
        server = start_server(env, port)
        try:

            async def api_runs() -> None:
                headers = {"Authorization": f"Bearer {token}"}
                data = sources["api"].read_bytes()
                async with aiohttp.ClientSession(headers=headers) as session:
                    for run in range(runs):
                        url = f"http://127.0.0.1:{port}/api/v1/tenants/api{run}/moh"
                        start = time.perf_counter()
                        assert await put(session, url, data) == 201
                        await until_live(session, url)
                        api_live.append(time.perf_counter() - start)
                        moh = await asyncio.to_thread(lab.moh_start_seconds, f"tenant-api{run}")
                        api_total.append(api_live[-1] + moh)
                        shares.append(await asyncio.to_thread(heard, lab, f"bench_api{run}", f"tenant-api{run}", 440.0))

            asyncio.run(api_runs())
        finally:
            server.terminate()
            server.wait(20)
    print(f"lab Asterisk, realtime classes; 4.8 MB 300 s MP3; {runs} runs each")
    print(f"API PUT -> live              p50 {p(api_live, 50):.2f} s  p99 {p(api_live, 99):.2f} s")
    print(f"API PUT -> a hold plays it   p50 {p(api_total, 50):.2f} s  p99 {p(api_total, 99):.2f} s")
    print(f"CLI upload + sync            p50 {p(cli_live, 50):.2f} s  p99 {p(cli_live, 99):.2f} s")
    print(f"CLI -> a hold plays it       p50 {p(cli_total, 50):.2f} s  p99 {p(cli_total, 99):.2f} s")
    print(f"ratio API/CLI to a hold playing it (p50): {p(api_total, 50) / p(cli_total, 50):.2f}")
    print(f"the new file's tone in the 2 s recordings: min {min(shares):.0%} of windows")
    if min(shares) < 0.9:
        raise SystemExit("a hold after live did not play the new file")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of ours and the floor")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each round")
    parser.add_argument("--changes", type=int, default=20, help="changes made from this process, each GET at once")
    parser.add_argument("--lab", action="store_true", help="measure until a hold plays it, on the lab Asterisk")
    parser.add_argument("--serve-floor", nargs=2, metavar=("PORT", "BODY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(int(args.serve_floor[0]), args.serve_floor[1])
        return
    if args.lab:
        on_lab(args.runs)
        return
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "upload.mp3"
        make_input(source)
        data = source.read_bytes()
        port = free_port()
        settings = Settings(home=Path(tmp) / "home", http_listen=f"127.0.0.1:{port}")
        env = {**os.environ, **settings_environ(settings)}
        cli(env, "init")
        token = cli(env, "tokens", "create", "--operator").strip().splitlines()[-1]
        ours = []
        for run in range(args.runs):  # the CLI path: upload, then sync that tenant
            start = time.perf_counter()
            cli(env, "upload", f"cli{run}", str(source), "--accept-disclaimer")
            cli(env, "sync", f"cli{run}")
            ours.append(time.perf_counter() - start)
        server = start_server(env, port)
        try:
            result = asyncio.run(
                measure(f"http://127.0.0.1:{port}", token, data, args.runs, server.pid, settings, args)
            )
        finally:
            server.terminate()
            server.wait(20)
    api = result["api"]
    assert isinstance(api, list)

    print(f"input: {len(data):,} bytes MP3, 300 s; {args.runs} runs each")
    print(f"API PUT -> live       p50 {p(api, 50):.2f} s  p99 {p(api, 99):.2f} s")
    print(f"CLI upload + sync     p50 {p(ours, 50):.2f} s  p99 {p(ours, 99):.2f} s")
    print(f"ratio API/CLI (p50): {p(api, 50) / p(ours, 50):.2f}")
    rates = result["rates"]
    assert isinstance(rates, dict)
    rounds = f"median of {args.rounds} alternating {args.seconds:g} s rounds"
    for connections, (mine, floor) in rates.items():
        print(
            f"GET …/moh at {connections:>2} connection(s): ours {mine:,.0f} req/s, bare aiohttp constant JSON"
            f" {floor:,.0f} req/s: ours/bare {mine / floor:.2f} (goal >= 0.5 at 50; {rounds})"
        )
    seen = result["seen"]
    assert isinstance(seen, list)
    latencies = sorted(s for _, s in seen)
    first = sum(1 for count, _ in seen if count == 1)
    print(
        f"change by another process -> GET showing it: {first}/{len(seen)} by the first GET after the commit;"
        f" p50 {p(latencies, 50) * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms (goal: the next GET, < 100 ms)"
    )
    print(
        f"server RSS {result['rss_before']:.0f} MB before 10 concurrent 4.8 MB uploads,"
        f" {result['rss_peak']:.0f} MB at the peak"
    )


if __name__ == "__main__":
    main()
