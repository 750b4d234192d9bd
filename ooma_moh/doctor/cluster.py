"""Doctor's checks of a cluster node (``database_url`` set; docs/cluster.md, "Nodes"):

- ``registry``: the catalog's node registry answers, and how many nodes are in which state;
- ``agent``: this node's agent is live — its heartbeat fresh (:mod:`ooma_moh.nodestate`), and
  no damage it found in what the node publishes left unrepaired;
- ``behind``: this node publishes every tenant's current music.

This node is ``OOMA_MOH_NODE_ID``, else the host name (as the agent takes it,
:func:`ooma_moh.nodelife.node_id_to_use`)."""

from __future__ import annotations

from collections import Counter

from ..config import Settings
from ..errors import OomaMohError
from ..nodelife import node_id_to_use
from ..nodestate import NodeState, grace_s
from ..storage.nodes import NodeRegistry, NodeStatus
from .findings import FAIL, OK, WARN, Finding, not_checked, one_line

START_AGENT = (
    "start this node's agent (`systemctl start ooma-moh-agent`, or `ooma-moh agent`); if it does not stay up,"
    " its log says why (`journalctl -u ooma-moh-agent`)"
)


def check_cluster(settings: Settings) -> list[Finding]:
    """``registry``, ``agent`` and ``behind``, in that order."""
    from ..service import utcnow

    try:
        registry = NodeRegistry(settings.database_url)
        try:
            statuses = registry.statuses(settings.class_prefix, utcnow())
        finally:
            registry.close()
    except OomaMohError as exc:
        return [
            Finding(
                "registry",
                FAIL,
                f"the cluster's node registry cannot be read: {one_line(str(exc))}",
                "make the catalog database reachable (OOMA_MOH_DATABASE_URL); after an upgrade of"
                " ooma-moh run `ooma-moh db upgrade` once",
            ),
            not_checked("agent", "the node registry cannot be read"),
            not_checked("behind", "the node registry cannot be read"),
        ]
    states = Counter(s.state.value for s in statuses)
    summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none yet"
    findings = [Finding("registry", OK, f"the node registry answers: {len(statuses)} node(s): {summary}")]
    try:
        node_id = node_id_to_use(settings.node_id)
    except OomaMohError as exc:
        return [
            *findings,
            Finding("agent", FAIL, one_line(str(exc)), "set OOMA_MOH_NODE_ID in the agent's environment and doctor's"),
            not_checked("behind", "this node has no node id"),
        ]
    mine = next((s for s in statuses if s.node_id == node_id), None)
    if mine is None:
        return [
            *findings,
            Finding(
                "agent",
                FAIL,
                f"no agent has ever reported as node {node_id!r}: nothing publishes the catalog's changes on this node",
                f"{START_AGENT}; check that OOMA_MOH_NODE_ID is the same for the agent and for doctor",
            ),
            not_checked("behind", f"node {node_id!r} is not in the registry"),
        ]
    return [*findings, _agent(mine), _behind(mine)]


def _agent(node: NodeStatus) -> Finding:
    """This node's agent by its state (:func:`ooma_moh.nodestate.node_state`)."""
    if node.state is NodeState.DOWN:
        if node.heartbeat_age_s is None or node.heartbeat_s is None:
            silent = "its agent stopped"
        else:
            silent = f"no heartbeat for {node.heartbeat_age_s:.0f} s (down after {grace_s(node.heartbeat_s):g} s)"
        error = f"; its last error: {one_line(node.last_error, 200)}" if node.last_error else ""
        return Finding(
            "agent",
            FAIL,
            f"node {node.node_id} is down: {silent}; changes are not published here and it is not counted{error}",
            START_AGENT,
        )
    if node.state is NodeState.DAMAGED:
        return Finding(
            "agent",
            FAIL,
            f"node {node.node_id}'s agent found published files damaged and has not repaired them:"
            f" {one_line(node.damage or '', 300)}; those tenants' callers may hear silence",
            "fix what the message names (disk, permissions, the blob store); the agent retries at every heartbeat",
        )
    repaired = f"; last repaired {one_line(node.repaired, 200)}" if node.repaired else ""
    return Finding(
        "agent",
        OK,
        f"node {node.node_id}'s agent is live ({node.holder or 'unknown process'},"
        f" heartbeat {node.heartbeat_age_s or 0.0:.1f} s ago){repaired}",
    )


def _behind(node: NodeStatus) -> Finding:
    """Whether this node publishes every tenant's current music."""
    if not node.behind:
        return Finding(
            "behind", OK, f"node {node.node_id} publishes every tenant's current music ({node.classes} class(es))"
        )
    lag = f", the oldest for {node.lag_s:.0f} s" if node.lag_s is not None else ""
    error = f"; its last error: {one_line(node.last_error, 200)}" if node.last_error else ""
    return Finding(
        "behind",
        WARN,
        f"node {node.node_id} does not publish {node.behind} tenant(s)' current music yet{lag}{error}",
        START_AGENT
        if node.state is NodeState.DOWN
        else "its agent catches up by itself within seconds; if it stays behind, fix its last error (`ooma-moh nodes`)",
    )
