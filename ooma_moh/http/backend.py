"""What the HTTP server works with, handed to :func:`~ooma_moh.http.app.make_app` by the one
wiring function (:func:`ooma_moh.app.http_backend`, or a test's in-memory fakes).

Handlers never open a catalog: they read through ``reader`` (in the catalog thread) and get a
unit of writing work from ``service()`` or ``catalog()`` — each a context manager with its own
connection, closed afterwards (SQLite connections are not shared between threads). What a read
found is kept in ``memory`` until a source says it changed (:mod:`ooma_moh.memview`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ..config import Settings
from ..errors import OomaMohError
from ..model import TenantMoh
from ..service import MohService
from ..storage import Blobs, Catalog

if TYPE_CHECKING:
    from ..ari.testcall import CallAri, Listen
    from ..memview import StatusMemory
    from ..resolve import ClassResolver


class PublishedView(Protocol):
    """What Asterisk on this host reads (a :class:`~ooma_moh.sync.Syncer`, read-only)."""

    def published(self, classes: Collection[str] | None = None) -> dict[str, str]:
        """class -> version directory as published now: every class, or those of ``classes``."""

    def version_dir(self, tenant: TenantMoh) -> str:
        """The directory the tenant's current version is published under."""


class NodeCounter(Protocol):
    """The cluster's node registry as the HTTP server reads it."""

    def count(self) -> int:
        """How many nodes have reported."""

    def live_on(self, moh_class: str, version: str | None) -> tuple[int, int]:
        """(nodes that play ``version`` of the class, nodes counted)."""

    def close(self) -> None:
        """Release the connection."""


@dataclass
class HttpBackend:
    """The server's collaborators. ``publish(tenant)`` is blocking: one tenant's class made live
    on this host (a sync of that tenant)."""

    settings: Settings
    reader: Catalog
    blobs: Blobs
    view: PublishedView
    service: Callable[[], AbstractContextManager[MohService]]
    catalog: Callable[[], AbstractContextManager[Catalog]]
    publish: Callable[[str], None]
    nodes: NodeCounter | None = None
    #: seconds before a failed publication is retried, after the 1st, 2nd, … failure in a row
    publish_retry_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 30.0)
    #: tenant -> class as the hold paths resolve it, over ``reader`` (the music of a test call);
    #: None: a resolver over ``reader`` alone
    classes: ClassResolver | None = None
    #: the ARI of test calls, made in the server's event loop; None: from the ARI settings
    #: (:func:`ooma_moh.ari.testcall.ari_line`)
    test_call_line: Callable[[], tuple[CallAri, Listen]] | None = None
    #: the last reads of the truth and the change marks that void them; None: every GET reads
    memory: StatusMemory | None = None

    def close(self) -> None:
        """Release the reader's, the memory's and the registry's connections."""
        if self.memory is not None:
            self.memory.close()
        with contextlib.suppress(OomaMohError):
            self.reader.close()
        if self.nodes is not None:
            self.nodes.close()
