"""Holds in dialplan bridges: channels in no Stasis application, which ARI may not touch (409
"Channel not in Stasis application"). Not ours to play — Asterisk plays the held channel's own
class, the one the FastAGI route gave it (docs/holds.md) — not an error, not a fallback. The hold
is logged once at INFO, and its tenant and whether the held party was given the tenant's class
are found for the hold statistics in the background, after the hold's own work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..errors import AsteriskError
from ..holdstats import is_fallback, tenant_of_class
from ..logsafe import logfmt, printable
from .events import Bridge, Channel

if TYPE_CHECKING:
    from .hold import HoldHandler

log = logging.getLogger("ooma_moh.ari.hold")  # every hold's line under the handler's logger
MUSIC_CLASS = "CHANNEL(musicclass)"


def hold_outside_stasis(handler: HoldHandler, holder: Channel, bridge: Bridge, held: Sequence[str]) -> None:
    """Log the dialplan hold and look its tenant up in the background (``handler._lookups``)."""
    what = "a dialplan bridge, Asterisk plays the held channel's own class"
    log.info("hold action=outside-stasis holder=%s bridge=%s: %s", logfmt(holder.name), logfmt(bridge.id), what)
    task = asyncio.create_task(classify(handler, holder, held), name="hold-stats-lookup")
    handler._lookups.add(task)
    task.add_done_callback(handler._lookups.discard)


async def classify(handler: HoldHandler, holder: Channel, held: Sequence[str]) -> None:
    """The holder's tenant, else (rule 1 of :mod:`ooma_moh.holdstats`) the tenant whose class
    the dialplan's route gave the held party."""
    try:
        heard = await handler.ari.get_variable(held[0], MUSIC_CLASS) if held else None
        tenant = await handler._tenant_of(holder) or tenant_of_class(heard or "", handler.resolver.prefix)
        expected, reason = await handler._class_of(tenant)
    except AsteriskError as exc:  # the channels are gone: the tenant stays unknown
        log.debug("hold statistics: no tenant for %s: %s", printable(holder.id), printable(exc))
        return
    handler.tally.classify(holder.id, tenant, fallback=is_fallback(heard or expected, expected, reason))
