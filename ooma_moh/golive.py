"""What goes live when: the one place that decides a tenant's publication state and who publishes.

A change (an upload, a deletion) reaches callers when the class Asterisk reads names the tenant's
current version. The state a tenant's admin sees is decided here, from these facts read at each
request, in this order (the first that applies wins):

1. **tracked** — this server is converting or publishing the tenant's change: that state
   (``converting``, ``publishing``); or its last publication failed: ``live`` if Asterisk plays
   what the catalog says after all (a sync from the CLI did it; the error is forgotten), else
   ``error`` with its reason — and once its backoff has passed, a request starts it again
   (``publishing``);
2. **a cluster** — the nodes' agents have reported (``total`` > 0): ``live`` once every node
   counted plays the current version, else ``publishing``;
3. **a publication just ended** while the truth was being read: ``publishing`` (what was read may
   predate it; the next read decides — never a second publication of the same change);
4. **live** — Asterisk here plays exactly what the catalog says: ``live``;
5. otherwise nothing is in progress and Asterisk plays something else: **start a publication**
   (a change made while this server was down, or by another host).

Who publishes: on a single host, this server publishes the tenant's class itself; in a cluster
(the node registry counts at least one node) the nodes' agents do, each on its own Asterisk, and
this server only reports how many have.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .model import MohSetting, TenantMoh


class State(str, enum.Enum):
    """Where a tenant's music stands."""

    CONVERTING = "converting"
    PUBLISHING = "publishing"
    LIVE = "live"
    ERROR = "error"


@dataclass(frozen=True)
class Status:
    """A state, and why when it is ``error``."""

    state: State
    reason: str | None = None

    def as_json(self) -> dict[str, str | None]:
        """``{"state": ..., "reason": ...}``."""
        return {"state": self.state.value, "reason": self.reason}


def is_live(tenant: TenantMoh, published: dict[str, str], class_prefix: str, version_dir: str | None) -> bool:
    """Whether Asterisk already plays what the catalog says for ``tenant``: its current version
    directory is the one published for its class, or (default music) no class of its is published."""
    moh_class = class_prefix + tenant.tenant_id
    if tenant.setting is MohSetting.FILE:
        return published.get(moh_class) == version_dir
    return moh_class not in published


def decide(
    tracked: Status | None, *, live_here: bool, ended_during_read: bool, live_on: int, total: int
) -> Status | None:
    """The tenant's state by the order in the module docstring; None means rule 5: nothing is in
    progress and the tenant is not live, so the caller starts a publication."""
    if tracked is not None and tracked.state is State.ERROR and live_here and not total:
        return Status(State.LIVE)
    if tracked is not None:
        return tracked
    if total:
        return Status(State.LIVE if live_on == total else State.PUBLISHING)
    if not live_here and ended_during_read:
        return Status(State.PUBLISHING)
    if live_here:
        return Status(State.LIVE)
    return None


def publishes_here(nodes_counted: int) -> bool:
    """Whether this server publishes a change itself: only where no node agent has reported."""
    return nodes_counted == 0
