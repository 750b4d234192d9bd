"""What each node of the cluster has published, in the PostgreSQL catalog (tables ``nodes`` and
``node_classes``, migrations 0002 and 0003), each agent's heartbeat and the process that holds a
node id, and the change notifications agents listen to.

Freshness (:mod:`ooma_moh.nodestate`) is judged on the database server's clock: heartbeats are
written as ``now()`` and their age read as ``now() - heartbeat_at``, so the hosts' clocks need not
agree."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg

from ..errors import OomaMohError, StorageError
from ..nodestate import MISSED_BEATS, Holder, NodeState, Process, grace_s, node_state
from .postgres_db import KeptConnection, connect, pg_error

T = TypeVar("T")
Db = psycopg.Connection[dict[str, Any]]
Scope = Collection[str] | None
CHANNEL = "ooma_moh_changes"  # NOTIFY payload: a tenant id (trigger on ``tenants``)


def fresh_sql(alias: str) -> str:
    """:func:`ooma_moh.nodestate.is_fresh` in SQL for the ``nodes`` row ``alias`` (server clock;
    no heartbeat, or no interval, is never fresh)."""
    return (
        f"coalesce({alias}.heartbeat_at > now() - make_interval(secs => {MISSED_BEATS} * {alias}.heartbeat_s), false)"
    )


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
    state: NodeState = NodeState.DOWN
    heartbeat_age_s: float | None = None  # seconds since its last heartbeat (None: none)
    heartbeat_s: float | None = None  # its agent's heartbeat interval
    holder: str | None = None  # the agent process holding the node id (pid and host)
    damage: str | None = None  # what its last check found damaged, not repaired yet
    damage_at: datetime | None = None
    repaired: str | None = None  # the last damage it found and repaired
    repaired_at: datetime | None = None


class NodeLive(OomaMohError):
    """``nodes remove`` of a node whose agent is live (heartbeat fresh), without ``--force``."""


class ChangeFeed:
    """Tenant ids as the catalog's trigger announces their changes (``NOTIFY``); psycopg's errors
    become ``StorageError`` here."""

    BURST_S = 0.05  # after the first change, how long the rest of a burst is gathered

    def __init__(self, db: psycopg.Connection[dict[str, Any]]) -> None:
        self._db = db

    def changes(self, timeout: float, burst_s: float | None = None) -> set[str]:
        """The tenants changed: waits up to ``timeout`` s for a first change, then gathers the
        rest of its burst for ``burst_s`` (default :attr:`BURST_S`; 0: only those already
        received); empty if none came."""
        tenants: set[str] = set()
        try:
            for notice in self._db.notifies(timeout=timeout):
                tenants.add(notice.payload)
                break
            if tenants:
                burst = self.BURST_S if burst_s is None else burst_s
                tenants.update(notice.payload for notice in self._db.notifies(timeout=burst))
        except psycopg.Error as exc:
            raise pg_error(exc, "following catalog changes") from None
        return tenants

    def ping(self) -> None:
        """One round trip on the listening connection: ``StorageError`` if it no longer answers
        (notifications received meanwhile are kept for :meth:`changes`)."""
        try:
            self._db.execute("SELECT 1")
        except psycopg.Error as exc:
            raise pg_error(exc, "following catalog changes") from None

    def close(self) -> None:
        """Stop listening."""
        with contextlib.suppress(psycopg.Error):
            self._db.close()


class NodeRegistry:
    """Node state on one connection (an agent's, or ``ooma-moh nodes``')."""

    def __init__(self, url: str) -> None:
        self.url = url
        # on the schema this code knows (else the error says to run ``db upgrade`` or upgrade
        # this host, instead of a missing column); survives a restart of the server
        self._link = KeptConnection(url, writable=True)

    def close(self) -> None:
        self._link.close()

    @contextlib.contextmanager
    def _errors(self, doing: str, *, ping: bool = True) -> Iterator[psycopg.Connection[dict[str, Any]]]:
        # checked before each use (one round trip): after a restart or failover of the server
        # the first GET's node count succeeds instead of failing once
        db = self._link.get(ping=ping, idle_ping=ping)  # without ping: the caller runs it once more if lost
        try:
            yield db
        except psycopg.Error as exc:
            raise pg_error(exc, doing) from None

    def _again_if_lost(self, doing: str, write: Callable[[Db], T]) -> T:
        """An agent's write, the same run twice as once: not checked first (one transaction more
        per change), but run once more on a new connection if the kept one was lost (a restart
        or failover of the server), as a catalog read is (``KeptConnection``, rule 3)."""
        try:
            with self._errors(doing, ping=False) as db:
                return write(db)
        except StorageError:
            if not self._link.lost():
                raise
        with self._errors(doing, ping=False) as db:
            return write(db)

    def record_success(
        self,
        node_id: str,
        published: dict[str, str],
        at: datetime,
        *,
        scope: Scope = None,
        instance_id: str | None = None,
    ) -> bool:
        """The node now publishes ``published`` (class -> version): all its classes, or with
        ``scope`` those of the classes in ``scope`` (a sync of named tenants; the others stay as
        recorded, and only those rows are read or written). One transaction, which is also the
        heartbeat of the agent ``instance_id`` if it holds the node id: whether it was."""

        def write(db: Db) -> bool:
            with db.transaction():
                row = db.execute(
                    "INSERT INTO nodes (node_id, last_seen, last_success) VALUES (%s, %s, %s)"
                    " ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen,"
                    " last_success = excluded.last_success, last_error = NULL, last_error_at = NULL,"
                    " heartbeat_at = CASE WHEN nodes.instance_id = %s THEN now() ELSE nodes.heartbeat_at END"
                    " RETURNING coalesce(instance_id = %s, false) AS beat",
                    (node_id, at, at, instance_id, instance_id),
                ).fetchone()
                self._record_classes(db, node_id, published, at, scope)
            return bool(row and row["beat"])

        return self._again_if_lost("recording what the node publishes", write)

    @staticmethod
    def _record_classes(db: Db, node_id: str, published: dict[str, str], at: datetime, scope: Scope) -> None:
        """``node_classes`` of the node made ``published`` (within ``scope``); a class whose version
        is unchanged keeps its ``published_at``."""
        if scope is None:
            current = {
                r["moh_class"]: r["version"]
                for r in db.execute(
                    "SELECT moh_class, version FROM node_classes WHERE node_id = %s", (node_id,)
                ).fetchall()
            }
            gone = [c for c in current if c not in published]
        else:
            current = {}
            gone = [c for c in scope if c not in published]
            published = {c: v for c, v in published.items() if c in scope}
        if gone:
            db.execute("DELETE FROM node_classes WHERE node_id = %s AND moh_class = ANY(%s)", (node_id, gone))
        with db.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO node_classes (node_id, moh_class, version, published_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (node_id, moh_class) DO UPDATE SET version = excluded.version,"
                " published_at = excluded.published_at WHERE node_classes.version <> excluded.version",
                [(node_id, c, v, at) for c, v in published.items() if current.get(c) != v],
            )

    def record_error(self, node_id: str, error: str, at: datetime) -> None:
        def write(db: Db) -> None:
            db.execute(
                "INSERT INTO nodes (node_id, last_seen, last_error, last_error_at) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (node_id) DO UPDATE SET last_seen = excluded.last_seen,"
                " last_error = excluded.last_error, last_error_at = excluded.last_error_at",
                (node_id, at, error[:500], at),
            )

        self._again_if_lost("recording the node's error", write)

    def claim(self, node_id: str, me: Process, heartbeat_s: float, replacing: str | None = None) -> Holder | None:
        """Take ``node_id`` for the agent process ``me`` and beat once, in one statement; None when
        taken. The id is taken only if it is free (no row, or released), already ``me``'s, held by
        ``replacing`` (an instance known to have ended), or its holder's heartbeat is stale;
        otherwise the holder is returned (who, how old its heartbeat). A new holder starts with no
        damage recorded (it checks what the node publishes within one interval)."""
        with self._errors("claiming the node id") as db:
            taken = db.execute(
                "INSERT INTO nodes (node_id, last_seen, heartbeat_at, heartbeat_s, instance_id, holder, holder_pid,"
                " holder_where) VALUES (%s, now(), now(), %s, %s, %s, %s, %s) ON CONFLICT (node_id) DO UPDATE SET"
                " heartbeat_at = now(), heartbeat_s = excluded.heartbeat_s, holder = excluded.holder,"
                " holder_pid = excluded.holder_pid, holder_where = excluded.holder_where,"
                " damage = CASE WHEN nodes.instance_id = excluded.instance_id THEN nodes.damage END,"
                " damaged_classes = CASE WHEN nodes.instance_id = excluded.instance_id"
                " THEN nodes.damaged_classes ELSE '{}' END,"
                " instance_id = excluded.instance_id WHERE nodes.instance_id IS NULL"
                " OR nodes.instance_id = excluded.instance_id OR nodes.instance_id = %s"
                f" OR NOT {fresh_sql('nodes')} RETURNING node_id",
                (node_id, heartbeat_s, me.instance_id, me.holder, me.pid, me.where, replacing),
            ).fetchone()
            if taken is not None:
                return None
            row = db.execute(
                "SELECT instance_id, holder, heartbeat_at, heartbeat_s, holder_pid, holder_where,"
                " extract(epoch FROM now() - heartbeat_at)::float8 AS age FROM nodes WHERE node_id = %s",
                (node_id,),
            ).fetchone()
        if row is None:  # removed in between: free again
            return self.claim(node_id, me, heartbeat_s)
        return Holder(
            row["instance_id"],
            row["holder"],
            row["heartbeat_at"],
            row["age"],
            row["heartbeat_s"],
            row["holder_pid"],
            row["holder_where"],
        )

    def heartbeat(self, node_id: str, instance_id: str, heartbeat_s: float) -> bool:
        """The agent ``instance_id`` is alive; False if it no longer holds ``node_id`` (the row was
        removed, or another process took the id: :meth:`claim` says which)."""

        def write(db: Db) -> bool:
            done = db.execute(
                "UPDATE nodes SET heartbeat_at = now(), heartbeat_s = %s WHERE node_id = %s AND instance_id = %s",
                (heartbeat_s, node_id, instance_id),
            )
            return done.rowcount == 1

        return self._again_if_lost("recording the node's heartbeat", write)

    def release(self, node_id: str, instance_id: str) -> None:
        """The agent ``instance_id`` stops: the node is down at once and its id free (a restart
        takes it without waiting for the grace)."""
        with self._errors("releasing the node id") as db:
            db.execute(
                "UPDATE nodes SET heartbeat_at = NULL, instance_id = NULL WHERE node_id = %s AND instance_id = %s",
                (node_id, instance_id),
            )

    def record_check(
        self, node_id: str, instance_id: str, damage: str | None, classes: list[str], repaired: str | None
    ) -> None:
        """What the agent's check of the published version directories found: ``damage`` (None:
        nothing) in ``classes``; ``repaired``: the damage it has just repaired."""
        with self._errors("recording the node's check") as db:
            db.execute(
                "UPDATE nodes SET damage = %s, damaged_classes = %s::text[],"
                " damage_at = CASE WHEN %s::text IS NULL THEN damage_at ELSE now() END,"
                " repaired = coalesce(%s, repaired),"
                " repaired_at = CASE WHEN %s::text IS NULL THEN repaired_at ELSE now() END"
                " WHERE node_id = %s AND instance_id = %s",
                (
                    damage and damage[:1000],
                    classes,
                    damage,
                    repaired and repaired[:1000],
                    repaired,
                    node_id,
                    instance_id,
                ),
            )

    def remove(self, node_id: str, *, force: bool = False) -> bool:
        """Retire ``node_id``: its rows go (``node_classes`` with it) and it is no longer counted;
        False if there was no such node. A live node (heartbeat fresh) is refused with
        :class:`NodeLive` unless ``force``: its agent would register it again at its next beat."""
        with self._errors("removing the node") as db, db.transaction():
            row = db.execute(
                f"SELECT {fresh_sql('n')} AS fresh, n.holder, n.heartbeat_s,"
                " extract(epoch FROM now() - n.heartbeat_at)::float8 AS age"
                " FROM nodes n WHERE n.node_id = %s FOR UPDATE",
                (node_id,),
            ).fetchone()
            if row is None:
                return False
            if row["fresh"] and not force:
                raise NodeLive(
                    f"node {node_id} is live: its agent ({row['holder'] or 'unknown process'}) beat"
                    f" {row['age']:.1f} s ago; stop that agent first (the node is down"
                    f" {grace_s(row['heartbeat_s']):g} s after its last heartbeat), or use --force"
                )
            db.execute("DELETE FROM nodes WHERE node_id = %s", (node_id,))
            return True

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
        """How many nodes are registered, down ones included (0: no agent ever reported, so the
        catalog's hosts publish themselves; a cluster whose agents are all down is still one)."""
        with self._errors("reading the nodes") as db:
            return int(db.execute("SELECT count(*) AS n FROM nodes").fetchone()["n"])  # type: ignore[index]

    def live_on(self, moh_class: str, version: str | None) -> tuple[int, int]:
        """(nodes that play ``version`` of the class — None: that do not publish the class at
        all, i.e. play default —, nodes counted). Counted: nodes that are not down
        (:mod:`ooma_moh.nodestate`); a node whose check found the class's directory damaged
        does not play it."""
        with self._errors("reading the nodes") as db:
            row = db.execute(
                "SELECT count(*) AS total, count(c.node_id) AS publishing,"
                " count(*) FILTER (WHERE c.version = %s AND NOT c.moh_class = ANY(n.damaged_classes)) AS live"
                " FROM nodes n LEFT JOIN node_classes c ON c.node_id = n.node_id AND c.moh_class = %s"
                f" WHERE {fresh_sql('n')}",
                (version, moh_class),
            ).fetchone()
        assert row is not None  # an aggregate always has its row
        total = int(row["total"])
        if version is None:
            return total - int(row["publishing"]), total
        return int(row["live"]), total

    def statuses(self, class_prefix: str, now: datetime) -> list[NodeStatus]:
        """Every node with its state and how far behind the catalog it is."""
        with self._errors("reading the nodes") as db:
            nodes = db.execute(
                "SELECT *, extract(epoch FROM now() - heartbeat_at)::float8 AS heartbeat_age_s"
                " FROM nodes ORDER BY node_id"
            ).fetchall()
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
        return [_status(node, by_node.get(node["node_id"], {}), desired, now) for node in nodes]


def _status(
    node: dict[str, Any], has: dict[str, str], desired: dict[str, tuple[str, datetime]], now: datetime
) -> NodeStatus:
    """One node's row, what it publishes and what the catalog wants, as :class:`NodeStatus`."""
    waiting = [at for c, (v, at) in desired.items() if has.get(c) != v]
    waiting += [node["last_seen"] for c in has if c not in desired]  # deleted centrally, still played
    oldest = min(waiting) if waiting else None
    return NodeStatus(
        node["node_id"],
        node["last_seen"],
        node["last_success"],
        node["last_error"],
        node["last_error_at"],
        len(has),
        len(waiting),
        max(0.0, (now - oldest).total_seconds()) if oldest else None,
        node_state(
            heartbeat_age_s=node["heartbeat_age_s"],
            heartbeat_s=node["heartbeat_s"],
            damaged=node["damage"] is not None,
            behind=len(waiting),
        ),
        node["heartbeat_age_s"],
        node["heartbeat_s"],
        node["holder"],
        node["damage"],
        node["damage_at"],
        node["repaired"],
        node["repaired_at"],
    )
