"""The one place that builds ooma-moh's objects from :class:`~ooma_moh.config.Settings`.

The CLI, the servers, the demo, the benchmarks and the tests get their catalog, blob store and
service from here, so the rules for opening the data home are applied the same way everywhere:

- a command that only reads never creates anything: it opens the catalog read-only and fails
  with a clear error if the home has no catalog (a typo in ``OOMA_MOH_HOME`` must not look like
  "no tenants");
- a catalog that is missing, empty or not ours while the blob store holds files is refused, even
  for writing, unless the operator says to start over (``ooma-moh init --start-over``): a new,
  empty catalog would let the next clean-up send every tenant's files to the trash.

With ``database_url`` set the catalog is PostgreSQL: its schema is made only by ``ooma-moh db
upgrade`` (or ``init``), and a database without it is "missing" in the sense above.

One wiring per process (docs/architecture.md): the CLI commands use :func:`open_catalog`,
:func:`build_service` and :func:`build_syncer`; ``serve http`` gets its collaborators from
:func:`http_backend`; the agent from :func:`make_agent`; ``serve agi`` and ``serve ari`` are given a
read-only :func:`open_catalog` by their command.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from .ari.client import AriClient
from .config import Settings
from .errors import CatalogMissing
from .http.backend import HttpBackend
from .media import FfmpegConverter
from .memview import FileMark, Mark, Notifications, SqliteMark, StatusMemory
from .mohdir import MohDirectory
from .publish import Publisher, RealtimePublisher, StaticPublisher
from .resolve import ClassResolver, NodeClasses
from .service import MohService
from .storage import Blobs, BlobStore, Catalog, SqliteCatalog
from .storage.sqlite_file import catalog_exists
from .sync import Syncer

if TYPE_CHECKING:
    from .agent import Agent


def catalog_present(settings: Settings) -> bool:
    """Whether the catalog exists: a SQLite file of ours, or a PostgreSQL schema."""
    if settings.database_url:
        from .storage.postgres_db import schema_version

        return schema_version(settings.database_url) > 0
    return catalog_exists(settings.catalog_path)


def create_catalog(settings: Settings, *, start_over: bool = False) -> list[int]:
    """Create or upgrade the catalog's schema (``init``, ``db upgrade``); PostgreSQL versions applied."""
    if settings.database_url:
        from .storage.postgres_db import upgrade

        _refuse_empty_catalog(settings, writable=True, start_over=start_over, creating=True)
        return upgrade(settings.database_url)
    open_catalog(settings, writable=True, start_over=start_over).close()
    return []


def open_catalog(settings: Settings, *, writable: bool = True, start_over: bool = False) -> Catalog:
    """The catalog of ``settings``, applying the rules in the module docstring."""
    _refuse_empty_catalog(settings, writable=writable, start_over=start_over)
    if settings.database_url:
        from .storage.postgres import PostgresCatalog

        return PostgresCatalog(settings.database_url, writable=writable)
    return SqliteCatalog(settings.catalog_path, writable=writable)


def open_hold_catalog(settings: Settings) -> Catalog:
    """The read-only catalog of the hold resolvers (``serve ari``, ``serve agi``). On PostgreSQL
    it connects at its first read, not now: a node whose database is down starts anyway and serves
    holds from what it has published (:class:`~ooma_moh.resolve.ClassResolver`)."""
    if settings.database_url:
        from .storage.postgres import PostgresCatalog

        return PostgresCatalog(settings.database_url, writable=False, connect_now=False)
    return open_catalog(settings, writable=False)


def open_stats_catalog(settings: Settings) -> Catalog:
    """The catalog ``serve ari`` writes hold statistics to (writable; on PostgreSQL it connects at
    its first write). Opened by the statistics writer at its first write, not at the start."""
    if settings.database_url:
        from .storage.postgres import PostgresCatalog

        return PostgresCatalog(settings.database_url, writable=True, connect_now=False)
    return open_catalog(settings, writable=True)


def hold_resolver(settings: Settings, *, remember: bool = False) -> ClassResolver:
    """tenant -> class for the hold paths (``serve ari``, ``serve agi``, the classic AGI script):
    the catalog (:func:`open_hold_catalog`), and this node's published classes when it is down.
    ``remember`` (the servers): a SQLite catalog's answers are kept until its ``data_version``
    moves (:class:`~ooma_moh.memview.StatusMemory`); a PostgreSQL catalog's are cached 2 s."""
    memory = None
    if remember and not settings.database_url:
        memory = StatusMemory([SqliteMark(settings.catalog_path, absent_ok=False)], credentials=False)
    return ClassResolver(open_hold_catalog(settings), settings.class_prefix, node_classes(settings), memory=memory)


def node_classes(settings: Settings) -> NodeClasses:
    """The tenant classes this node publishes, read from its publisher (a hold's class when the
    catalog is down)."""
    publisher = make_publisher(settings, create=False)
    source = settings.classes_conf if settings.publish_mode == "static" else settings.realtime_db
    return NodeClasses(publisher.current, source)


def _refuse_empty_catalog(settings: Settings, *, writable: bool, start_over: bool, creating: bool = False) -> None:
    where = settings.database_url and "the catalog database" or f"the catalog {settings.catalog_path}"
    if not catalog_present(settings):
        if open_blobs(settings, writable=False).holds_files() and not start_over:
            raise CatalogMissing(
                f"{where} is missing or empty, but the blob store holds files: restore the catalog from"
                " a backup, or run `ooma-moh init --start-over` to begin an empty catalog (the files"
                f" then go to the trash and are deleted after {settings.blob_grace_s / 86400:g} days)"
            )
        if not writable:
            raise CatalogMissing(
                f"no catalog in {settings.home}: nothing was ever stored with this data home (check"
                " OOMA_MOH_HOME / --home), or create it with `ooma-moh init`"
                if not settings.database_url
                else "the catalog database has no ooma-moh schema (check OOMA_MOH_DATABASE_URL), or create it"
                " with `ooma-moh db upgrade`"
            )
        if settings.database_url and not creating:  # only `db upgrade`/`init` make a shared schema
            raise CatalogMissing("the catalog database has no ooma-moh schema: run `ooma-moh db upgrade`")


def open_blobs(settings: Settings, *, writable: bool = True) -> Blobs:
    """The blob store: ``settings.home/blobs``, or with ``blob_url`` the object storage with
    that directory as its local cache."""
    local = BlobStore(settings.blob_dir, grace_s=settings.blob_grace_s, writable=writable)
    if not settings.blob_url:
        return local
    from .storage.s3 import S3BlobStore

    return S3BlobStore(
        settings.blob_url,
        local,
        endpoint_url=settings.s3_endpoint_url or None,
        addressing_style=settings.s3_addressing_style,
        grace_s=settings.blob_grace_s,
    )


def ari_reload(settings: Settings) -> Callable[[], None]:
    """Reload res_musiconhold through ARI (static publication mode), in a short event loop of
    its own: sync runs from the CLI, outside any loop."""

    def reload() -> None:
        async def go() -> None:
            async with AriClient(settings.ari_url, settings.ari_user, settings.ari_password) as ari:
                await ari.reload_module("res_musiconhold.so")

        asyncio.run(go())

    return reload


def make_publisher(settings: Settings, *, create: bool = True) -> Publisher:
    """The publisher for ``settings.publish_mode``: realtime rows, or the static include file;
    ``create=False`` for a view that only reads (it never creates the realtime database)."""
    if settings.publish_mode == "static":
        return StaticPublisher(settings.classes_conf, settings.class_prefix)
    return RealtimePublisher(settings.realtime_db, settings.class_prefix, moh_dir=settings.moh_dir, create=create)


def make_syncer(
    settings: Settings,
    catalog: Catalog,
    blobs: Blobs,
    reload: Callable[[], None] | None = None,
    *,
    create: bool = True,
) -> Syncer:
    """The syncer of ``catalog`` into this host's MOH directory and publisher, reloading Asterisk
    through ARI (static mode); ``create=False`` for a read-only view (see :func:`make_publisher`)."""
    publisher = make_publisher(settings, create=create)
    return Syncer(settings, catalog, MohDirectory(settings.moh_dir, blobs), publisher, reload or ari_reload(settings))


def build_syncer(settings: Settings, service: MohService, reload: Callable[[], None] | None = None) -> Syncer:
    """The syncer for ``service``'s catalog and blobs, reloading Asterisk through ARI."""
    return make_syncer(settings, service.catalog, service.blobs, reload)


def build_service(settings: Settings, *, writable: bool = True, start_over: bool = False) -> MohService:
    """The service on the configured back ends (the catalog and blobs of ``settings``: SQLite and
    the home's blob directory by default, PostgreSQL and object storage in a cluster) and ffmpeg."""
    from .voiceover import FfmpegMixer

    catalog = open_catalog(settings, writable=writable, start_over=start_over)
    converter = FfmpegConverter(settings)
    blobs = open_blobs(settings, writable=writable)
    return MohService(settings, catalog, blobs, converter, mixer=FfmpegMixer(settings, converter))


def make_agent(settings: Settings, node_id: str) -> Agent:
    """``ooma-moh agent``'s loop: a syncer on its own catalog connection, and the node registry."""
    from .agent import Agent
    from .storage.nodes import NodeRegistry

    def open_syncer() -> Syncer:
        return build_syncer(settings, build_service(settings))

    return Agent(settings, node_id, open_syncer=open_syncer, open_registry=lambda: NodeRegistry(settings.database_url))


@contextlib.contextmanager
def catalog_session(settings: Settings) -> Iterator[Catalog]:
    """A writable catalog for one piece of work, closed afterwards."""
    with contextlib.closing(open_catalog(settings, writable=True)) as catalog:
        yield catalog


def http_backend(settings: Settings) -> HttpBackend:
    """``serve http``'s collaborators: a read-only catalog and blob store for its reads, a service
    per upload or deletion, the node registry when the catalog is shared (a cluster), the hold
    paths' class resolution over its reader for test calls (their ARI is the ARI settings'), and the
    memory of its reads with the change marks of the catalog and of what Asterisk reads (SQLite:
    ``data_version``; PostgreSQL: its notifications, heard by a thread started here)."""
    reader = open_catalog(settings, writable=False)
    blobs = open_blobs(settings, writable=False)
    nodes = None
    asterisk: Mark = (
        FileMark(settings.classes_conf)
        if settings.publish_mode == "static"
        else SqliteMark(settings.realtime_db, absent_ok=True)
    )
    if settings.database_url:
        from .storage.nodes import NodeRegistry

        nodes = NodeRegistry(settings.database_url)
        notifications = Notifications(nodes.listen)
        notifications.start()
        memory = StatusMemory([asterisk], notifications, credentials=False)
    else:
        memory = StatusMemory([SqliteMark(settings.catalog_path, absent_ok=False), asterisk])

    def publish(tenant: str) -> None:
        with service_session(settings) as service:
            build_syncer(settings, service).run([tenant])

    return HttpBackend(
        settings=settings,
        reader=reader,
        blobs=blobs,
        view=make_syncer(settings, reader, blobs, create=False),
        service=lambda: service_session(settings),
        catalog=lambda: catalog_session(settings),
        publish=publish,
        nodes=nodes,
        classes=ClassResolver(reader, settings.class_prefix, node_classes(settings)),  # a test call's music
        memory=memory,
    )


@contextlib.contextmanager
def service_session(settings: Settings, *, writable: bool = True) -> Iterator[MohService]:
    """:func:`build_service` for one piece of work, its catalog closed afterwards (a worker
    thread's own connection: SQLite connections are not shared between threads)."""
    service = build_service(settings, writable=writable)
    try:
        yield service
    finally:
        service.catalog.close()
