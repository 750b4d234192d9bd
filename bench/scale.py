"""Scale benchmark (issue 24, item 5): one node at 10,000 and 100,000 tenants, realtime classes.

For each size, on a fresh lab Asterisk with the catalog of bench/sync.py (five tiny distinct
renditions per tenant):

1. full sync, ``ooma-moh sync --all`` in a child process: wall time and peak RSS (the working set
   of the sync the agent runs);
2. one change live and StartMusicOnHold of tenant classes against the static ``default`` class,
   timed inside Asterisk (bench/sync.py's steps);
3. ``ooma-moh list`` and ``ooma-moh verify`` (child processes: time, peak RSS), each against a
   floor run the same way: a bare script that reads the same rows with sqlite3 (``list``), and
   also stats the same files and asks Asterisk the same ``realtime load`` per class on 8 threads
   (``verify``);
4. ``serve ari``, ``serve agi``, ``serve http`` started on the catalog: time until ``/readyz``
   says ready, then peak RSS (VmHWM) after 100 requests (agi: FastAGI requests, http: ``GET``
   status with an operator token; ari: connected to the lab's ARI, no holds); the floor is a bare
   ``python -c pass``.

Then each figure at both sizes, its growth per tenant ((last / first) / (last N / first N): 1.0
is linear, below it better) and ours / floor. ``--profile DIR``: the children and the change run
under cProfile (their times are then the profiler's), each profile's heaviest functions printed;
``--only``: the steps after the full sync to run (``change,list,verify,floors,serve``).

    sudo .venv/bin/python bench/scale.py [--sizes 10000,100000] [--only STEPS] [--profile DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pstats
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.sync import change_live, fill_catalog, moh_starts  # noqa: E402
from ooma_moh.config import Settings, settings_environ  # noqa: E402
from ooma_moh.lab import LabAsterisk  # noqa: E402
from ooma_moh.lab.config import free_port  # noqa: E402

REQUESTS = 100
FLOOR_SQL = (
    "SELECT t.tenant_id, t.setting, u.original_name, r.extension, r.size, r.sha256 FROM tenants t"
    " LEFT JOIN uploads u ON u.id = t.upload_id LEFT JOIN renditions r ON r.upload_id = t.upload_id"
    " ORDER BY t.tenant_id, r.extension"
)


def child(argv: list[str], env: dict[str, str], log: Path, out: Path | None = None) -> tuple[float, int, int]:
    """Run ``argv`` to its end: (seconds, peak RSS in bytes, exit code). The RSS is counted by
    /usr/bin/time: a child forked from this (large) process would inherit its high-water mark."""
    rss = log.with_suffix(".rss")
    with open(log, "ab") as err, open(out or os.devnull, "wb") as stdout:
        start = time.perf_counter()
        timed = ["/usr/bin/time", "-q", "-f", "%M", "-o", str(rss), *argv]
        code = subprocess.call(timed, env=env, stdout=stdout, stderr=err)
        elapsed = time.perf_counter() - start
    return elapsed, int(rss.read_text().split()[-1]) * 1024, code


def ooma(args: list[str], profile: Path | None) -> list[str]:
    """argv of ``ooma-moh ARGS``, under cProfile (statistics to ``profile``) when asked."""
    prof = ["-m", "cProfile", "-o", str(profile)] if profile else []
    return [sys.executable, *prof, "-m", "ooma_moh", *args]


# -- the floors, each run as a child: python bench/scale.py --floor list|verify ----------------------
def floor_list(settings: Settings) -> None:
    """What ``list`` prints, from the same rows, with nothing but sqlite3."""
    db = sqlite3.connect(f"file:{settings.catalog_path}?mode=ro", uri=True)
    last = None
    out = sys.stdout
    for tenant, setting, name, *_ in db.execute(FLOOR_SQL):
        if tenant != last:
            out.write(f"{tenant:<24} {setting:<8} {settings.class_prefix + tenant:<30} {name or ''}\n")
            last = tenant


def floor_verify(settings: Settings) -> None:
    """What ``verify`` checks, bare: catalog rows, each version directory's files stat'ed, the
    realtime rows, Asterisk's ``realtime load`` per class on 8 threads; each part's seconds."""
    import hashlib
    import shlex

    times = {}
    t0 = time.perf_counter()
    want: dict[str, list[tuple[str, int, str]]] = {}
    catalog = sqlite3.connect(f"file:{settings.catalog_path}?mode=ro", uri=True)
    for tenant, setting, _, ext, size, sha in catalog.execute(FLOOR_SQL):
        if setting == "file":
            want.setdefault(settings.class_prefix + tenant, []).append((ext, size, sha))
    times["catalog"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    expected, bad = {}, 0
    for moh_class, rends in want.items():
        version = hashlib.sha256("".join(f"{e}:{s}\n" for e, _, s in rends).encode()).hexdigest()[:16]
        directory = settings.moh_dir / moh_class / version
        expected[moh_class] = str(directory)
        bad += sum(1 for e, size, _ in rends if os.stat(directory / f"moh.{e}").st_size != size)
    times["disk"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = dict(sqlite3.connect(settings.realtime_db).execute("SELECT name, directory FROM musiconhold"))
    bad += sum(1 for c, d in expected.items() if rows.get(c) != d)
    times["publication"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cli = shlex.split(settings.asterisk_cli)

    def load(moh_class: str) -> bool:
        text = subprocess.run([*cli, f"realtime load musiconhold name {moh_class}"], capture_output=True, text=True)
        return expected[moh_class] in text.stdout

    with ThreadPoolExecutor(max_workers=8) as pool:
        bad += sum(1 for ok in pool.map(load, sorted(expected)) if not ok)
    times["asterisk"] = time.perf_counter() - t0
    print(json.dumps({"bad": bad, **times}))


# -- the servers -------------------------------------------------------------------------------------
def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def agi_request(port: int, tenant: str) -> str:
    """One FastAGI request for ``tenant``: every command answered ``200 result=1``; the commands."""
    said = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"agi_network: yes\nagi_network_script: moh?tenant={tenant}\nagi_channel: PJSIP/x\n\n".encode())
        stream = sock.makefile("rwb")
        while line := stream.readline():
            said.append(line.decode().strip())
            stream.write(b"200 result=1\n")
            stream.flush()
    return " | ".join(said)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")


@contextmanager
def server(argv: list[str], env: dict[str, str], log: Path, ready_url: str) -> Iterator[tuple[int, float]]:
    """A ``serve`` process until it is ready: (pid, seconds to ready); stopped with SIGTERM."""
    with open(log, "ab") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=err)
    try:
        while get(ready_url) != 200:
            if proc.poll() is not None or time.perf_counter() - start > 300:
                raise RuntimeError(f"{argv[3:5]} not ready: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield proc.pid, time.perf_counter() - start
    finally:
        proc.terminate()
        proc.wait(30)


def serve_all(env: dict[str, str], tenants: int, work: Path) -> dict[str, float]:
    out: dict[str, float] = {}
    picks = [f"t{(i * 7919) % tenants:05d}" for i in range(REQUESTS)]
    metrics = free_port()
    base = ["serve", "ari", "--metrics-listen", f"127.0.0.1:{metrics}"]
    with server(ooma(base, None), env, work / "ari.log", f"http://127.0.0.1:{metrics}/readyz") as (pid, ready):
        out["ari_ready_s"], out["ari_rss"] = ready, peak_rss(pid)
    port, metrics = free_port(), free_port()
    argv = ooma(["serve", "agi", "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{metrics}"], None)
    with server(argv, env, work / "agi.log", f"http://127.0.0.1:{metrics}/readyz") as (pid, ready):
        said = [agi_request(port, t) for t in picks]
        assert all("musicclass" in s.lower() for s in said), said[:3]
        out["agi_ready_s"], out["agi_rss"] = ready, peak_rss(pid)
    token_file = work / "token.txt"
    child(ooma(["tokens", "create", "--operator"], None), env, work / "tokens.log", token_file)
    token = token_file.read_text().strip().splitlines()[-1]
    port = free_port()
    argv = ooma(["serve", "http", "--listen", f"127.0.0.1:{port}"], None)
    with server(argv, env, work / "http.log", f"http://127.0.0.1:{port}/readyz") as (pid, ready):
        codes = [get(f"http://127.0.0.1:{port}/api/v1/tenants/{t}/moh", token) for t in picks]
        assert codes == [200] * REQUESTS, codes[:5]
        out["http_ready_s"], out["http_rss"] = ready, peak_rss(pid)
    return out


# -- one size ----------------------------------------------------------------------------------------
def run_size(tenants: int, work: Path, profile: Path | None, steps: set[str]) -> dict[str, float]:
    """Every figure at one size; ``steps``: those of change, list, verify, floors, serve to run."""
    out: dict[str, float] = {}

    def prof(name: str) -> Path | None:
        return profile / f"{name}-{tenants}.prof" if profile else None

    with LabAsterisk(work / "lab") as lab:
        settings = Settings(**lab.settings_overrides(), publish_mode="realtime")
        env = {**os.environ, **settings_environ(settings)}
        t0 = time.perf_counter()
        fill_catalog(Settings(home=lab.home), tenants)
        print(f"[{tenants}] catalog filled in {time.perf_counter() - t0:.1f} s", flush=True)
        log = work / "children.log"
        out["sync_s"], out["sync_rss"], rc = child(ooma(["sync", "--all"], prof("sync")), env, log)
        assert rc == 0, log.read_text()[-3000:]
        print(f"[{tenants}] full sync {out['sync_s']:.1f} s", flush=True)
        if "change" in steps:
            out.update(change_live(lab, settings, f"t{tenants // 2:05d}", 880.0, work, prof("change")))
            out.update(moh_starts(lab, tenants))
        floor = [sys.executable, __file__, "--floor"]
        if "list" in steps:
            out["list_s"], out["list_rss"], rc = child(ooma(["list"], prof("list")), env, log, work / "list.txt")
            assert rc == 0 and len((work / "list.txt").read_text().splitlines()) == tenants, log.read_text()[-3000:]
        if "list" in steps and "floors" in steps:
            out["list_floor_s"], out["list_floor_rss"], _ = child([*floor, "list"], env, log, work / "floor-list.txt")
        if "verify" in steps:
            out["verify_s"], out["verify_rss"], out["verify_rc"] = child(ooma(["verify"], prof("verify")), env, log)
            print(f"[{tenants}] verify {out['verify_s']:.1f} s", flush=True)
        if "verify" in steps and "floors" in steps:
            out["verify_floor_s"], out["verify_floor_rss"], _ = child([*floor, "verify"], env, log, work / "fv.json")
            out.update({f"verify_floor_{k}_s": v for k, v in json.loads((work / "fv.json").read_text()).items()})
        if "serve" in steps:
            out.update(serve_all(env, tenants, work))
        out["python_rss"] = child([sys.executable, "-c", "pass"], env, log)[1]
    return out


def report(sizes: list[int], results: dict[int, dict[str, float]]) -> None:
    lo, hi = sizes[0], sizes[-1]
    rows: list[tuple[str, str, float, str | None]] = [  # label, key, unit scale, floor key
        ("full sync (s)", "sync_s", 1, None),
        ("one change live (ms)", "change_live_s", 1e3, None),
        ("StartMusicOnHold tenant class (ms)", "moh_start_s", 1e3, "default_start_s"),
        ("list (s)", "list_s", 1, "list_floor_s"),
        ("verify (s)", "verify_s", 1, "verify_floor_s"),
        ("sync peak RSS (MB)", "sync_rss", 1e-6, "python_rss"),
        ("list peak RSS (MB)", "list_rss", 1e-6, "list_floor_rss"),
        ("verify peak RSS (MB)", "verify_rss", 1e-6, "verify_floor_rss"),
        ("serve ari peak RSS (MB)", "ari_rss", 1e-6, "python_rss"),
        ("serve agi peak RSS (MB)", "agi_rss", 1e-6, "python_rss"),
        ("serve http peak RSS (MB)", "http_rss", 1e-6, "python_rss"),
        ("serve ari ready (s)", "ari_ready_s", 1, None),
        ("serve agi ready (s)", "agi_ready_s", 1, None),
        ("serve http ready (s)", "http_ready_s", 1, None),
    ]
    print(f"\n| figure | {lo:,} | {hi:,} | growth per tenant | floor at {hi:,} | ours / floor at {lo:,} / {hi:,} |")
    print("|---|---|---|---|---|---|")
    for label, key, scale, floor_key in rows:
        if key not in results[lo] or key not in results[hi]:
            continue
        a, b = results[lo][key], results[hi][key]
        growth = (b / a) / (hi / lo) if a else float("nan")
        floor = ratio = ""
        if floor_key in results[lo] and floor_key in results[hi]:
            fa, fb = results[lo][floor_key], results[hi][floor_key]
            floor = f"{fb * scale:,.2f}"
            ratio = f"{a / fa:.2f} / {b / fb:.2f}"
        print(f"| {label} | {a * scale:,.2f} | {b * scale:,.2f} | {growth:.2f} | {floor} | {ratio} |")
    for label, key in (("sync", "sync_rss"), ("ari", "ari_rss"), ("agi", "agi_rss"), ("http", "http_rss")):
        if key not in results[lo]:
            continue
        per = (results[hi][key] - results[lo][key]) / (hi - lo)
        print(f"{label}: {per:,.0f} bytes more per tenant from {lo:,} to {hi:,}")
    for size in sizes:
        print(f"\n[{size}] " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(results[size].items())))


def print_profile(path: Path, top: int = 14) -> None:
    text = io.StringIO()
    pstats.Stats(str(path), stream=text).sort_stats("tottime").print_stats(top)
    print(f"\n== {path.name} (by own time)\n" + "\n".join(text.getvalue().splitlines()[6:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="tenant counts, smallest first")
    parser.add_argument("--profile", type=Path, help="run under cProfile, statistics written there")
    parser.add_argument("--only", default="change,list,verify,floors,serve", help="steps after the full sync")
    parser.add_argument("--floor", choices=["list", "verify"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        from ooma_moh.config import load_settings

        (floor_list if args.floor == "list" else floor_verify)(load_settings())
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: dict[int, Any] = {}
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix=f"ooma-moh-scale-{size}-") as tmp:
            results[size] = run_size(size, Path(tmp), args.profile, set(args.only.split(",")))
    report(sizes, results)
    if args.profile:
        for path in sorted(args.profile.glob("*.prof")):
            print_profile(path)


if __name__ == "__main__":
    main()
