"""After the ARI events WebSocket (re)connects: the hold handler's state rebuilt from ``GET
/channels`` and ``GET /bridges``, and the holds in progress re-attached — found through the
``OOMA_MOH_HOLD`` mark the handler leaves on each holder (:mod:`.hold`). A hold whose holder
unheld while we were away (``CHANNEL(rtp,hold)`` says so) has its music stopped.

Holds re-attached here are not counted in the hold statistics (their start was not seen), nor
are those whose end went by unseen (:meth:`~.tally.HoldTally.forget_gone`); see :mod:`.tally`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .. import metrics
from ..errors import AsteriskError
from ..logsafe import logfmt
from ..model import HOLD_VARIABLE
from . import policy
from .client import Ari
from .events import Bridge, Channel
from .policy import HoldAction
from .state import ActiveHold

if TYPE_CHECKING:
    from .hold import HoldHandler

log = logging.getLogger(__name__)


async def resync(handler: HoldHandler) -> None:
    """Rebuild state from ``GET /channels`` and ``GET /bridges``; re-attach holds in progress.
    Work still queued from before (a reconnection) finishes first, put-off follow-ups included
    (:mod:`.followup`): their marks are what this resync finds."""
    await handler.followups.flush()
    channels = {c.id: c for c in map(Channel.from_json, await handler.ari.list_channels())}
    bridges = {b.id: b for b in map(Bridge.from_json, await handler.ari.list_bridges())}
    previous = handler.state.replace(channels, bridges)
    handler.tally.forget_gone(channels)  # holds whose end went by while we were away
    for bridge in bridges.values():
        await handler._preset(bridge)
        for cid in bridge.channel_ids:
            channel = channels.get(cid)
            if channel is None:
                continue
            moh_class = channel.holding_class
            if moh_class is None and HOLD_VARIABLE not in channel.variables:
                moh_class = await handler.ari.get_variable(cid, HOLD_VARIABLE) or None
            if not moh_class:
                continue
            others = [p.id for p in await handler._parties(bridge) if p.id != cid]
            if await still_held(handler.ari, cid) is False:
                await handler._stop_music(
                    policy.to_stop_after_missed_unhold(others, bridge.forwards_hold), "missed unhold"
                )
                await handler._remember_hold(cid, "")
                handler.tally.discard(cid)  # its length is unknown: not counted
                handler.stats.actions[HoldAction.MISSED_UNHOLD.value] += 1
                metrics.hold(HoldAction.MISSED_UNHOLD.value, False, moh_class, None)
                log.info("hold ended while disconnected holder=%s: music stopped", logfmt(channel.name))
                continue
            known = previous.get(cid)
            hold = ActiveHold(cid, bridge.id, moh_class, marked=True)  # found by its mark
            handler.state.holds[cid] = hold
            plan = policy.plan_reattach(others, bridge.forwards_hold, known.listeners if known else ())
            await handler._carry_out(plan, hold)
            handler._count(plan.action, None, 0.0, hold, channel)
    log.info(
        "resynced: %d channels, %d bridges, %d holds in progress",
        len(channels),
        len(bridges),
        len(handler.state.holds),
    )


async def still_held(ari: Ari, channel_id: str) -> bool | None:
    """Whether the holder's phone still holds: ``CHANNEL(rtp,hold)`` (PJSIP channels; None
    where Asterisk cannot say)."""
    try:
        value = await ari.get_variable(channel_id, "CHANNEL(rtp,hold)")
    except AsteriskError:
        return None
    return None if value is None else value.strip() == "1"
