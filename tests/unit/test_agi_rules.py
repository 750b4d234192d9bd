"""Pure AGI parsing, the moh route's choice of tenant, and log-safe text."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from time import monotonic
from typing import Any

import pytest

from ooma_moh.agi.batch import CatalogBatches
from ooma_moh.agi.clock import ConnectionClock
from ooma_moh.agi.protocol import AgiRequest, ProtocolError, parse_env_line, parse_response, quote
from ooma_moh.agi.route import choose_tenant, decide, needs_variable
from ooma_moh.errors import StorageError
from ooma_moh.logsafe import logfmt, printable
from ooma_moh.model import MohSetting, TenantMoh
from ooma_moh.resolve import ClassResolver, Resolution, class_of


def test_parse_env_line() -> None:
    assert parse_env_line("agi_channel: PJSIP/a-1\n") == ("agi_channel", "PJSIP/a-1")
    assert parse_env_line('agi_callerid: "A: B" <1>\n') == ("agi_callerid", '"A: B" <1>')
    assert parse_env_line("\n") is None
    with pytest.raises(ProtocolError):
        parse_env_line("GET / HTTP/1.1\n")


def test_parse_response() -> None:
    assert parse_response("200 result=1 (tenant-a)\n") == parse_response("200 result=1 (tenant-a)")
    r = parse_response("200 result=1 (tenant-a)")
    assert (r.code, r.result, r.data, r.ok) == (200, "1", "tenant-a", True)
    assert parse_response("200 result=0").result == "0"
    assert not parse_response("200 result=-1").ok
    assert parse_response("HANGUP").code == 511
    assert parse_response("511 Command Not Permitted on a dead channel").code == 511
    with pytest.raises(ProtocolError):
        parse_response("hello")


def test_quote_escapes() -> None:
    assert quote('a "b" \\ c\nd') == '"a \\"b\\" \\\\ c d"'


def request(**env: str) -> AgiRequest:
    return AgiRequest.from_env({k: v for k, v in env.items()})


def test_request_from_fastagi_env() -> None:
    r = request(agi_network_script="moh?tenant=acme&x=1", agi_arg_1="other", agi_arg_2="")
    assert (r.script, r.query, r.args) == ("moh", {"tenant": "acme", "x": "1"}, ("other", ""))
    assert request(agi_request="agi://127.0.0.1:4573/moh").script == "moh"


def test_tenant_sources_in_order() -> None:
    assert choose_tenant(request(agi_network_script="moh?tenant=q", agi_arg_1="a"), "v") == ("q", "argument")
    assert choose_tenant(request(agi_network_script="moh", agi_arg_1="a"), "v") == ("a", "argument")
    assert needs_variable(request(agi_network_script="moh", agi_arg_1="a")) is None
    r = request(agi_network_script="moh", agi_accountcode="acct")
    assert needs_variable(r) == "GET VARIABLE OOMA_MOH_TENANT\n"
    assert choose_tenant(r, "v") == ("v", "variable")
    assert choose_tenant(r, None) == ("acct", "accountcode")
    assert choose_tenant(request(agi_network_script="moh", agi_accountcode="unknown"), None) == (None, "none")


def test_decision_commands() -> None:
    d = decide("acme", "argument", Resolution("tenant-acme", None))
    assert d.commands() == [
        'SET VARIABLE CHANNEL(musicclass) "tenant-acme"\n',
        'SET VARIABLE OOMA_MOH_CLASS "tenant-acme"\n',
    ]
    assert decide(None, "none", None).moh_class == "default"


@pytest.mark.parametrize(
    "raw, logged",
    [
        ("acme", "acme"),
        ("a\nFAKE LINE", "a\\nFAKE LINE"),
        ("\r\t\x00\x7f", "\\r\\t\\x00\\x7f"),
        ("x\x1b[31mred", "x\\x1b[31mred"),  # ANSI colour: ESC escaped, the rest is harmless text
        ("\x85\u2028\u202e", "\\x85\\u2028\\u202e"),  # NEL, line separator, right-to-left override
        ("caf\u00e9 \U0001f600", "caf\\xe9 \\U0001f600"),  # printable non-ASCII too: output is ASCII
        ("back\\slash", "back\\\\slash"),  # doubled, so an escape in the output is never ambiguous
        (None, "None"),
        (ValueError("bad\nline"), "bad\\nline"),
    ],
)
def test_printable_escapes_everything_that_is_not_printable_ascii(raw: object, logged: str) -> None:
    assert printable(raw) == logged
    assert printable(raw).isascii() and printable(raw).isprintable()


def test_printable_bounds_length_without_splitting_escapes() -> None:
    assert printable("x" * 100) == "x" * 100
    assert printable("x" * 101) == "x" * 100 + "..."
    assert printable("x" * 10_000_000, limit=20) == "x" * 20 + "..."
    assert printable("ab\x1bcd", limit=5) == "ab..."  # "\x1b" would not fit whole: cut before it
    assert printable("ab\x1bcd", limit=6) == "ab\\x1b..."
    assert max(len(printable(chr(c) * 500)) for c in range(0x300)) <= 100 + 3


def test_logfmt_quotes_what_could_pass_for_more_fields() -> None:
    assert logfmt("tenant-acme") == "tenant-acme"
    assert logfmt("x class=tenant-vip") == '"x class=tenant-vip"'
    assert logfmt('a"b') == '"a\\"b"'
    assert logfmt("") == '""'
    assert logfmt("a\nb c") == '"a\\nb c"'
    assert logfmt("a\\") == "a\\\\"  # a trailing backslash is doubled: it cannot escape a closing quote


def test_known_responses_parse_as_any_other() -> None:
    from ooma_moh.agi.protocol import _parse_response

    for line in ("200 result=1", "200 result=0", "HANGUP", "200 result=1 (x)", "200 result=-1"):
        assert parse_response(line + "\n") == _parse_response(line)


# -- the connection's time limits (one timer), the catalog batches, reading ahead of expiry --------


async def _stalls(clock: ConnectionClock, *, waits: list[float], gap: float = 0.0) -> None:
    """Waits of the given lengths (stamped as reads), ``gap`` of work between them."""
    for wait in waits:
        clock.since = monotonic()
        await asyncio.sleep(wait)
        clock.since = None
        await asyncio.sleep(gap)


def test_clock_io_timeout_counts_each_wait_not_the_whole() -> None:
    async def run(waits: list[float], gap: float = 0.0) -> str | None:
        try:
            async with ConnectionClock(0.3, 5.0) as clock:
                await _stalls(clock, waits=waits, gap=gap)
        except TimeoutError:
            return clock.expired
        return None

    assert asyncio.run(run([0.1] * 5)) is None  # 0.5 s in all, no wait over 0.3 s
    assert asyncio.run(run([0.05, 0.05], gap=0.4)) is None  # work between waits is not a wait
    assert asyncio.run(run([0.05, 0.6])) == "io"


def test_clock_deadline_and_outside_cancellation() -> None:
    async def drip() -> str | None:
        started = monotonic()
        try:
            async with ConnectionClock(0.3, 0.5) as clock:
                await _stalls(clock, waits=[0.1] * 20)
        except TimeoutError:
            assert 0.45 <= monotonic() - started < 2.0  # bounded, on a busy machine too
            return clock.expired
        return None

    assert asyncio.run(drip()) == "deadline"

    async def cancelled_from_outside() -> None:
        async def work() -> None:
            async with ConnectionClock(5.0, 5.0) as clock:
                await _stalls(clock, waits=[1.0])

        task = asyncio.create_task(work())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):  # not turned into a timeout
            await task

    asyncio.run(cancelled_from_outside())


def test_catalog_batches_run_in_one_thread_together_with_results_and_errors() -> None:
    threads: list[str] = []

    def work(x: int) -> int:
        threads.append(threading.current_thread().name)
        if x < 0:
            raise ValueError("negative")
        return x * 2

    async def run() -> list[Any]:
        batches = CatalogBatches(executor)
        return await asyncio.gather(*(batches(work, x) for x in (1, 2, -1, 3)), return_exceptions=True)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="catalog") as executor:
        results = asyncio.run(run())
    assert results[:2] == [2, 4] and isinstance(results[2], ValueError) and results[3] == 6
    assert set(threads) == {threads[0]} and threads[0].startswith("catalog")

    async def after_shutdown() -> None:
        with pytest.raises(RuntimeError):
            await CatalogBatches(executor)(work, 1)

    asyncio.run(after_shutdown())


class _Catalog:
    def __init__(self) -> None:
        self.reads = 0
        self.down = False

    def get(self, tenant_id: str) -> TenantMoh | None:
        self.reads += 1
        if self.down:
            raise StorageError("catalog_unreachable", "down")
        return TenantMoh(tenant_id, MohSetting.FILE)


def test_class_of_reads_ahead_of_expiry_without_waiting() -> None:
    catalog = _Catalog()
    resolver = ClassResolver(catalog, "tenant-", cache_s=0.4)  # type: ignore[arg-type]

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def thread(func: Any, *args: Any) -> Any:
            return loop.run_in_executor(None, func, *args)

        first = await class_of(resolver, "acme", thread, refresh_after_s=0.1)
        assert first == Resolution("tenant-acme", None) and catalog.reads == 1
        assert await class_of(resolver, "acme", thread, refresh_after_s=0.1) == first
        assert catalog.reads == 1  # fresh: no read
        await asyncio.sleep(0.15)
        assert await class_of(resolver, "acme", thread, refresh_after_s=0.1) == first  # answered at once...
        reading = resolver.reading["acme"]  # ... and read again in the background
        await reading
        assert catalog.reads == 2 and resolver.cached("acme") == first
        catalog.down = True
        resolver.catalog_failed_at_once("down")
        await asyncio.sleep(0.15)
        await class_of(resolver, "acme", thread, refresh_after_s=0.1)  # still cached: no read while down
        assert catalog.reads == 2 and "acme" not in resolver.reading

    asyncio.run(run())
