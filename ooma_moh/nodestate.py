"""A cluster node's state — the one place that decides it, for ``ooma-moh nodes``, doctor and the
"live on N of M" counts. From the facts the catalog holds about the node, in this order (the
first that applies wins):

1. ``down`` — no heartbeat for :data:`MISSED_BEATS` of the node's own heartbeat intervals
   (``node_heartbeat_s`` of its agent), or none since its agent last stopped: the agent is
   stopped, killed, hung or cut off from the catalog, and nobody keeps the node's classes in line
   with the catalog. A down node is not counted in "live on N of M" (its Asterisk may still play
   what it had; nobody knows).
2. ``damaged`` — heartbeat fresh, but the agent's last check of what it publishes found a version
   directory missing or altered and has not repaired it yet: callers of those classes on that
   node may hear silence or the wrong music. An agent repairs what it finds at once, so a node
   stays ``damaged`` only while the repair fails.
3. ``behind`` — heartbeat fresh, and some tenants' current music is not published on the node yet
   (or a tenant put back on default music still is).
4. ``live`` — heartbeat fresh, nothing found damaged, nothing behind.

The same freshness rule decides whether an agent may take a node id another process holds
(:func:`is_fresh`: a fresh holder is live, a second agent with its id refuses to start) and
whether ``ooma-moh nodes remove`` needs ``--force``. The catalog applies it in SQL with the same
numbers (:mod:`.storage.nodes`, ``fresh_sql``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

#: heartbeats a node may miss before it is ``down``: the grace is this many of its intervals
MISSED_BEATS = 3


class NodeState(str, enum.Enum):
    """What ``ooma-moh nodes`` says of a node."""

    LIVE = "live"
    BEHIND = "behind"
    DOWN = "down"
    DAMAGED = "damaged"


def grace_s(heartbeat_s: float) -> float:
    """How long a node with heartbeat interval ``heartbeat_s`` may be silent before it is down."""
    return MISSED_BEATS * heartbeat_s


def is_fresh(heartbeat_age_s: float | None, heartbeat_s: float | None) -> bool:
    """Whether the last heartbeat, ``heartbeat_age_s`` ago (None: none), is within the grace of
    an agent beating every ``heartbeat_s`` (None: unknown, never fresh)."""
    if heartbeat_age_s is None or heartbeat_s is None:
        return False
    return heartbeat_age_s < grace_s(heartbeat_s)


def node_state(*, heartbeat_age_s: float | None, heartbeat_s: float | None, damaged: bool, behind: int) -> NodeState:
    """The node's state by the order in the module docstring."""
    if not is_fresh(heartbeat_age_s, heartbeat_s):
        return NodeState.DOWN
    if damaged:
        return NodeState.DAMAGED
    if behind:
        return NodeState.BEHIND
    return NodeState.LIVE


@dataclass(frozen=True)
class Process:
    """An agent process, as it registers with its heartbeat: a random instance id, who it is (pid
    and host, for people), its pid, and where that pid names it (boot and pid namespace; None:
    unknown)."""

    instance_id: str
    holder: str
    pid: int
    where: str | None


@dataclass(frozen=True)
class Holder:
    """The agent process that holds a node id, as the catalog has it: its random instance id (one
    per process), who it is (pid and host), its last heartbeat and interval, its pid and where
    that pid names it (boot and pid namespace)."""

    instance_id: str | None
    holder: str | None
    heartbeat_at: datetime | None
    heartbeat_age_s: float | None
    heartbeat_s: float | None
    pid: int | None = None
    where: str | None = None

    @property
    def fresh(self) -> bool:
        """Whether its heartbeat is fresh (:func:`is_fresh`)."""
        return is_fresh(self.heartbeat_age_s, self.heartbeat_s)
