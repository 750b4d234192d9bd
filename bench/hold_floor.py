"""The floor of bench/hold.py (issue 24): the least an ARI application can do on the same calls
(:class:`BareApp`), and the report of ours against it and against Asterisk alone."""

from __future__ import annotations

import asyncio
import math
import statistics
import threading
from datetime import datetime
from typing import Any

from ooma_moh.ari.client import AriClient
from ooma_moh.ari.events import parse_timestamp
from ooma_moh.ari.listener import EventListener
from ooma_moh.ari.state import ms_since
from ooma_moh.lab import LabAsterisk
from ooma_moh.lab.ari import Call


class BareApp:
    """The floor (issue 24): the least an ARI application can do on the same Asterisk for the same
    calls. It knows each call's class in advance — set on the caller when the call is set up, so a
    hold Asterisk forwards plays it — and on ``ChannelHold`` does nothing but ``POST
    /channels/{caller}/moh`` where Asterisk does not forward (softmix), each hold in a task of its
    own; ``DELETE …/moh`` on unhold. Same client and listener code as ``serve ari``, same
    subscription, in this process."""

    def __init__(self, lab: LabAsterisk, app: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = AriClient(lab.ari_url, lab.ari_user, lab.ari_password)
        self.listener = EventListener(self.client, app, self.on_event)
        #: holder (the user leg) -> (caller, class, softmix)
        self.plan: dict[str, tuple[str, str, bool]] = {}
        #: ChannelHold (Asterisk's timestamp) -> music started, ms (0: forwarded by Asterisk)
        self.to_music_ms: list[float] = []
        #: ChannelHold (Asterisk's timestamp) -> received here, ms, for the holds it starts music on
        self.delivered_ms: list[float] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> BareApp:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.listener.run(), self.loop)
        asyncio.run_coroutine_threadsafe(asyncio.wait_for(self.listener.connected.wait(), 10), self.loop).result(15)
        return self

    def prepare(self, calls: list[tuple[str, Call]]) -> None:
        """Learn the calls and preset each caller's class (the floor knows it in advance)."""
        for tenant, call in calls:
            moh_class, softmix = f"tenant-{tenant}", call.name.endswith("_rec")
            self.plan[call.user] = (call.caller, moh_class, softmix)
            asyncio.run_coroutine_threadsafe(
                self.client.set_variable(call.caller, "CHANNEL(musicclass)", moh_class), self.loop
            ).result(15)

    async def on_event(self, data: dict[str, Any]) -> None:
        channel = (data.get("channel") or {}).get("id")
        if channel not in self.plan or data.get("type") not in ("ChannelHold", "ChannelUnhold"):
            return
        stamp = parse_timestamp(data.get("timestamp"))
        if data["type"] == "ChannelHold" and self.plan[channel][2]:
            self.delivered_ms.append(ms_since(stamp))
        task = asyncio.create_task(self.act(data["type"], channel, stamp))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def act(self, kind: str, holder: str, stamp: datetime | None) -> None:
        caller, moh_class, softmix = self.plan[holder]
        if kind == "ChannelHold":
            if softmix:
                await self.client.start_moh(caller, moh_class)
            self.to_music_ms.append(ms_since(stamp) if softmix else 0.0)
        elif softmix:
            await self.client.stop_moh(caller)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.listener.stop(), self.loop).result(15)
        asyncio.run_coroutine_threadsafe(self.client.close(), self.loop).result(15)
        self.loop.call_soon_threadsafe(self.loop.stop)


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] if len(values) > 1 else float("nan")


def report_floor(
    n: int,
    alone: dict[str, Any],
    floor: dict[str, Any],
    ours: tuple[list[float], list[float], list[float], list[float]],
) -> None:
    """Ours against the bare ARI application and Asterisk alone, same run (issue 24's goals)."""

    def show(values: list[float]) -> str:
        q = [pct(values, 50), pct(values, 99)]
        return "/".join("never" if math.isinf(v) else f"{v:.0f}" for v in q)

    print(f"N={n} against the floor: wrong holds: Asterisk alone {alone['wrong_share']:.0%},")
    print(f"       bare application {floor['wrong_share']:.0%} (goal 0 %)")
    delays, _, gaps, delivered = ours
    ratio = pct(delays, 99) / pct(floor["to_music_ms"], 99) if pct(floor["to_music_ms"], 99) else math.nan
    print(
        f"       ChannelHold -> music p50/p99 ms: ours {show(delays)}, bare {show(floor['to_music_ms'])}:"
        f" p99 ours/bare {ratio:.2f} (goal <= 1.2)"
    )
    print(
        f"       Asterisk's delivery of ChannelHold, holds the application started music for, p50/p99 ms:"
        f" ours {show(delivered)}, bare {show(floor['delivered_ms'])}"
    )
    heard_ratio = pct(gaps, 99) / pct(floor["gaps_ms"], 99) if pct(floor["gaps_ms"], 99) else math.nan
    print(
        f"       heard gap (hold asked -> the tenant's music in the recording) p50/p99 ms: ours {show(gaps)},"
        f" bare {show(floor['gaps_ms'])}, Asterisk alone {show(alone['gaps_ms'])}:"
        f" p99 ours/bare {heard_ratio:.2f} (goal <= 1.2)"
    )


def pct(values: list[float], p: int) -> float:
    """The nearest-rank percentile (``inf`` when a caller never heard the music)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]
