"""Wiring for ``ooma-moh serve ari``: client, listener and hold handler in one event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from .. import health
from ..config import Settings
from ..lifetime import serve_until_stopped
from ..resolve import ClassResolver, keep_endpoint_copy
from ..storage.base import HoldStatistics
from .client import AriClient
from .hold import HoldHandler
from .listener import EventListener
from .tally import HoldTally, NoTally, StatsWriter

log = logging.getLogger(__name__)


async def run_hold_handler(
    settings: Settings, resolver: ClassResolver, open_stats: Callable[[], HoldStatistics]
) -> HoldHandler:
    """Run until SIGTERM/SIGINT or cancellation; returns the handler (its stats). Hold statistics
    go to the catalog ``open_stats`` opens (:class:`~.tally.StatsWriter`)."""
    client = AriClient(
        settings.ari_url, settings.ari_user, settings.ari_password, max_connections=settings.ari_max_connections
    )
    tally = HoldTally() if settings.hold_stats else NoTally()
    handler = HoldHandler(client, resolver, parallel=settings.ari_parallel_bridges, tally=tally)
    probing = ThreadPoolExecutor(1, thread_name_prefix="ooma-moh-readyz")
    listener = EventListener(
        client, settings.ari_app, handler.dispatch, on_connect=handler.resync, event_types=handler.event_types
    )
    writer = StatsWriter(handler.tally, open_stats, settings.stats_retention_days)

    probe = health.CatalogProbe(probing, resolver.check_catalog)

    async def not_ready() -> str | None:
        if not listener.connected.is_set():
            return f"not connected to Asterisk's ARI events: {listener.last_problem or 'connecting'}"
        return await health.hold_readiness(resolver, probe)

    exporter = None
    if settings.metrics_address is not None:
        exporter, port = await health.start_server(settings.metrics_address, not_ready)
        log.info("metrics on %s:%d (/metrics, /healthz, /readyz)", settings.metrics_address[0], port)
    reader = asyncio.create_task(listener.run(), name="ari-events")
    copying = asyncio.create_task(keep_endpoint_copy(resolver), name="endpoint-copy")  # for outages
    stats = asyncio.create_task(writer.run(), name="hold-stats")
    try:
        await serve_until_stopped(reader)
    finally:
        await listener.stop()
        handler.followups.stop_settling()
        try:  # holds being handled finish, and their put-off marks (bounded: each ARI request has its own timeout)
            await asyncio.wait_for(handler.followups.flush(), 15.0)
        except TimeoutError:
            log.warning("ARI hold handler stopped with %d bridges' events unfinished", handler.dispatcher.pending)
        reader.cancel()
        copying.cancel()
        stats.cancel()
        await asyncio.gather(reader, copying, stats, return_exceptions=True)
        await writer.close()  # what was counted since the last write (SIGTERM loses nothing)
        await client.close()
        probing.shutdown(wait=False, cancel_futures=True)
        if exporter is not None:
            await exporter.cleanup()
        log.info("ARI hold handler stopped; %s", handler.stats.summary())
    return handler
