"""What each node of the cluster has published, in the PostgreSQL catalog (tables ``nodes`` and
``node_classes``, migration 0002), and the change notifications agents listen to."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from .postgres_db import connect, pg_error

CHANNEL = "ooma_moh_changes"  # NOTIFY payload: a tenant id (trigger on ``tenants``)


@dataclass(frozen=True)
class NodeStatus:
    """One node as ``ooma-moh nodes`` shows it."""

    node_id: str
    last_seen: datetime
    last_success: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    classes: int  # classes it publishes
    behind: int  # tenants whose current music it does not publish yet
    lag_s: float | None  # how long the oldest such change has waited (None: none waiting)


class ChangeFeed:
    """Tenant ids as the catalog's trigger announces their changes (``NOTIFY``); psycopg's errors
    become ``StorageError`` here."""

    BURST_S = 0.05  # after the first change, how long the rest of a burst is gathered

    def __init__(self, db: psycopg.Connection[dict[str, Any]]) -> None:
        self._db = db

    def changes(self, timeout: float) -> set[str]:
        """The tenants changed: waits up to ``timeout`` s for a first change, then gathers the
        rest of its burst; empty if none came."""
        tenants: set[str] = set()
        try:
            for notice in self._db.notifies(timeout=timeout):
                tenants.add(notice.payload)
                break
            if tenants:
                tenants.update(notice.payload for notice in self._db.notifies(timeout=self.BURST_S))
        except psycopg.Error as exc:
            raise pg_error(exc, "following catalog changes") from None
        return tenants

    def close(self) -> None:
        """Stop listening."""
        with contextlib.suppress(psycopg.Error):
            self._db.close()


class NodeRegistry:
    """Node state on one connection (an agent's, or ``ooma-moh nodes``')."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._db = connect(url)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        if self._db.closed or self._db.broken:
            self._db = connect(self.url)
        try:
            yield self._db
        except psycopg.Error as exc:
            raise pg_error(exc, doing) from None

    def record_success(self, node_id: str, published: dict[str, str], at: datetime) -> None:
        """The node now publishes ``published`` (class -> version)."""
        with self._errors("recording what the node publishes") as db, db.transaction():
            db.execute(
                "INSERT INTO nodes (node_id, last_seen, last_success) VALUES (%s, %s, %s)"
                " ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen,"
                " last_success = excluded.last_success, last_error = NULL, last_error_at = NULL",
                (node_id, at, at),
            )
            current = {
                r["moh_class"]: r["version"]
                for r in db.execute(
                    "SELECT moh_class, version FROM node_classes WHERE node_id = %s", (node_id,)
                ).fetchall()
            }
            gone = [c for c in current if c not in published]
            if gone:
                db.execute("DELETE FROM node_classes WHERE node_id = %s AND moh_class = ANY(%s)", (node_id, gone))
            with db.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO node_classes (node_id, moh_class, version, published_at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (node_id, moh_class) DO UPDATE SET version = excluded.version,"
                    " published_at = excluded.published_at",
                    [(node_id, c, v, at) for c, v in published.items() if current.get(c) != v],
                )

    def record_error(self, node_id: str, error: str, at: datetime) -> None:
        with self._errors("recording the node's error") as db:
            db.execute(
                "INSERT INTO nodes (node_id, last_seen, last_error, last_error_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen,"
                " last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                (node_id, at, error[:500], at),
            )

    def listen(self) -> ChangeFeed:
        """The tenants whose music changes from now on, on a connection of their own."""
        db = connect(self.url)
        try:
            db.execute(f"LISTEN {CHANNEL}".encode())
        except psycopg.Error as exc:
            db.close()
            raise pg_error(exc, "subscribing to catalog changes") from None
        return ChangeFeed(db)

    def count(self) -> int:
        """How many nodes have reported (0: no agent runs, the catalog's hosts publish)."""
        with self._errors("reading the nodes") as db:
            return int(db.execute("SELECT count(*) AS n FROM nodes").fetchone()["n"])  # type: ignore[index]

    def live_on(self, moh_class: str, version: str | None) -> tuple[int, int]:
        """(nodes that play ``version`` of the class — None: that do not publish the class at
        all, i.e. play default —, nodes that have reported)."""
        with self._errors("reading the nodes") as db:
            total = db.execute("SELECT count(*) AS n FROM nodes").fetchone()["n"]  # type: ignore[index]
            if version is None:
                publishing = db.execute(
                    "SELECT count(*) AS n FROM node_classes WHERE moh_class = %s", (moh_class,)
                ).fetchone()["n"]  # type: ignore[index]
                return int(total) - int(publishing), int(total)
            live = db.execute(
                "SELECT count(*) AS n FROM node_classes WHERE moh_class = %s AND version = %s", (moh_class, version)
            ).fetchone()["n"]  # type: ignore[index]
            return int(live), int(total)

    def statuses(self, class_prefix: str, now: datetime) -> list[NodeStatus]:
        """Every node with how far behind the catalog it is."""
        with self._errors("reading the nodes") as db:
            nodes = db.execute("SELECT * FROM nodes ORDER BY node_id").fetchall()
            wanted = db.execute(
                "SELECT t.tenant_id, t.updated_at, (SELECT string_agg(r.extension || ':' || r.sha256, E'\\n'"
                " ORDER BY r.extension) FROM renditions r WHERE r.upload_id = t.upload_id) AS content"
                " FROM tenants t WHERE t.setting = 'file'"
            ).fetchall()
            published = db.execute("SELECT node_id, moh_class, version FROM node_classes").fetchall()
        from ..model import version_of_content

        desired = {
            class_prefix + w["tenant_id"]: (version_of_content(w["content"] or ""), w["updated_at"]) for w in wanted
        }
        by_node: dict[str, dict[str, str]] = {}
        for row in published:
            by_node.setdefault(row["node_id"], {})[row["moh_class"]] = row["version"]
        result = []
        for node in nodes:
            has = by_node.get(node["node_id"], {})
            waiting = [at for c, (v, at) in desired.items() if has.get(c) != v]
            waiting += [node["last_seen"] for c in has if c not in desired]  # deleted centrally, still played
            oldest = min(waiting) if waiting else None
            result.append(
                NodeStatus(
                    node["node_id"],
                    node["last_seen"],
                    node["last_success"],
                    node["last_error"],
                    node["last_error_at"],
                    len(has),
                    len(waiting),
                    max(0.0, (now - oldest).total_seconds()) if oldest else None,
                )
            )
        return result
