"""The life of every long-running server (``serve agi``, ``serve ari``, ``serve http``) once its
listeners are open — one function, :func:`serve_until_stopped`, instead of a copy in each.

The order, the same for all: open every listener (a failure there is the command's only line) →
set aside what the start-up made from the garbage collector's walks (``gc.freeze``: the modules
and the wiring, ~65,000 objects in ``serve ari`` that live as long as the process; a full
collection walked them all: 8 ms on an idle machine, pauses of the event loop of 23–35 ms measured
in the middle of a burst of 50 holds on a busy one) →
tell systemd it is ready (``Type=notify``: ``systemctl start`` returns now) → serve until SIGTERM
or SIGINT, or until a part the server watches ends on its own (the ARI handler's event reader) →
tell systemd it is stopping → the server closes what it opened, in reverse order, letting work in
flight finish (its ``finally``).
"""

from __future__ import annotations

import asyncio
import gc
import signal
from typing import Any

from . import systemd


async def serve_until_stopped(*watch: asyncio.Future[Any]) -> None:
    """Signal readiness, wait for SIGTERM/SIGINT or for any of ``watch`` to end, signal stopping.
    The tasks watched are left to the caller to stop."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gc.collect()
    gc.freeze()
    systemd.ready()
    stopper = asyncio.create_task(stop.wait(), name="stop")
    try:
        await asyncio.wait({stopper, *watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        systemd.stopping()
        stopper.cancel()
        await asyncio.gather(stopper, return_exceptions=True)
