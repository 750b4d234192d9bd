"""The hold rules as pure functions: given what is known of a bridge and an event, what to do.

No I/O here: :class:`~ooma_moh.ari.hold.HoldHandler` gathers the facts over ARI (who is in the
bridge, each party's tenant and class, the bridge's technology), asks these functions, and
carries out the answer. Measured on Asterisk 22 (docs/ari.md): a held party hears the class that
is on its own channel when Asterisk forwards the hold (2-party bridges only); in a softmix bridge
nobody hears anything unless MOH is started on them; MOH started after the hold leaves ~0.5 s of
``default``. Hence a preset when membership changes, and a safety net at the hold.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


class HoldAction(str, enum.Enum):
    """What the handler did about one hold (logged, counted, benchmarked)."""

    FORWARDED = "forwarded"  # Asterisk forwarded the hold and plays the preset class: nothing to do
    CORRECTED = "corrected"  # forwarded with the wrong class: set the class, restart MOH
    STARTED = "started"  # Asterisk does not forward here (softmix): we start MOH
    CONFERENCE = "conference"  # 2+ other people still talking: no music into a conference
    ALONE = "alone"  # nobody else in the bridge
    JOINED = "joined-during-hold"  # a channel joined a bridge while someone there holds
    RESYNCED = "resynced"  # a hold in progress found again after a reconnection
    MISSED_UNHOLD = "missed-unhold"  # the holder unheld while we were disconnected

    @property
    def plays_music(self) -> bool:
        """Whether a listener hears the tenant's music because of this action."""
        return self in (HoldAction.FORWARDED, HoldAction.CORRECTED, HoldAction.STARTED)

    @property
    def hears_music(self) -> bool:
        """Whether someone hears the hold's class afterwards (not in a conference, alone, or after
        a missed unhold)."""
        return self not in (HoldAction.CONFERENCE, HoldAction.ALONE, HoldAction.MISSED_UNHOLD)


@dataclass(frozen=True)
class Party:
    """A real party of a bridge (not an announcer, recorder or snoop) and its tenant, if any."""

    id: str
    tenant: str | None


@dataclass(frozen=True)
class HoldPlan:
    """The answer for one hold: the action, who must get the class and MOH started by us, and
    who hears the music (started by us or by Asterisk's forwarded hold)."""

    action: HoldAction
    start_on: tuple[str, ...] = ()
    listeners: tuple[str, ...] = ()


def preset_tenants(parties: Sequence[Party]) -> dict[str, str]:
    """Party id -> the tenant whose class it should carry: the single tenant among the *other*
    parties. None of them has one, or two different ones: no preset (the holder's tenant decides
    at the hold itself)."""
    plan: dict[str, str] = {}
    for party in parties:
        tenants = {o.tenant for o in parties if o.id != party.id and o.tenant is not None}
        if len(tenants) == 1:
            (plan[party.id],) = tenants
    return plan


def plan_hold(others: Sequence[str], forwards: bool, held_class: str | None, moh_class: str) -> HoldPlan:
    """What to do when a party holds: ``others`` are the other real parties, ``forwards`` whether
    Asterisk forwards the hold in this bridge, ``held_class`` the class now on the single other
    party's channel, ``moh_class`` the holder's tenant class."""
    if not others:
        return HoldPlan(HoldAction.ALONE)
    if len(others) > 1:
        return HoldPlan(HoldAction.CONFERENCE)
    (held,) = others
    if not forwards:
        return HoldPlan(HoldAction.STARTED, (held,), (held,))
    if held_class == moh_class:
        return HoldPlan(HoldAction.FORWARDED, (), (held,))
    return HoldPlan(HoldAction.CORRECTED, (held,), (held,))


def plan_reattach(others: Sequence[str], forwards: bool, listening: Iterable[str]) -> HoldPlan:
    """A hold found in progress after a reconnection: with one other party, make sure it hears
    the music (Asterisk plays a forwarded hold's; we restart ours unless we know it plays)."""
    known = set(listening)
    if len(others) != 1:
        return HoldPlan(HoldAction.RESYNCED, (), tuple(sorted(known)))
    (held,) = others
    if forwards or held in known:
        return HoldPlan(HoldAction.RESYNCED, (), tuple(sorted(known | {held})))
    return HoldPlan(HoldAction.RESYNCED, (held,), tuple(sorted(known | {held})))


def to_stop_after_missed_unhold(others: Sequence[str], forwards: bool) -> tuple[str, ...]:
    """The holder unheld while we were away: Asterisk stopped a forwarded hold's music itself;
    music we started in a softmix bridge is still playing on the other parties."""
    return () if forwards else tuple(others)


def holds_reaching(joiner: str, is_helper: bool, bridge_id: str, holds: Mapping[str, str]) -> list[str]:
    """Holders (``holds``: holder -> bridge) whose music a channel joining ``bridge_id`` must get:
    every hold in that bridge except its own; none for announcers, recorders and snoops."""
    if is_helper:
        return []
    return [holder for holder, bridge in holds.items() if bridge == bridge_id and holder != joiner]


def clears_hold_mark(why: str) -> bool:
    """Whether to clear ``OOMA_MOH_HOLD`` on the holder when its hold ends: not when it hung up
    (the channel is gone; the request would only fail)."""
    return why != HUNG_UP


UNHOLD = "unhold"
LEFT = "holder left the bridge"
HUNG_UP = "holder hung up"
