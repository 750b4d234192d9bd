"""Issue 12, "every hold", the transfers: what a tenant's caller hears when the phone transfers it
(SIP REFER blind, REFER with Replaces, DTMF to another tenant's user, out of a recorded ARI bridge)
and the new party then holds, recorded on the lab Asterisk and matched to a tone every 100 ms
(docs/holds.md).

The phone is a real SIP UA: the lab's loopback leg in Stasis. Asked to transfer over ARI
(``POST /channels/{id}/redirect``), chan_pjsip sends a REFER on that call's dialog, and the
Asterisk side of the call (res_pjsip_refer) handles it as a phone's transfer. Dialplan calls run
``ooma-lab-xfer`` (ooma_moh/lab/conf/extensions.conf): the FastAGI route on the caller, tenant
given as argument, ``none`` for the control (Asterisk alone).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ooma_moh.lab import DEFAULT_TONE, TALK_TONE, LabAsterisk
from ooma_moh.lab.ari import AriHarness, Call
from ooma_moh.lab.dialplan import DialplanCall
from tests.integration.conftest import tones_heard
from tests.integration.test_ari_hold import hold_once_and_check
from tests.integration.test_hold_scenarios import (  # noqa: F401  (agi_route, ari_handler, tenants: fixtures)
    A,
    B,
    agi_route,
    ari_handler,
    assert_transferred,
    heard,
    tenants,
    transfer_attended_by_dtmf,
    transfer_blind_by_dtmf,
)

#: as test_hold_scenarios.py: realtime publication, Asterisk's class choice is back-end neutral
pytestmark = [pytest.mark.parametrize("mode", ["realtime"]), pytest.mark.backend_neutral]


def phone_hangs_up(ari_lab: AriHarness, phone: str) -> None:
    """After a blind REFER the phone ends its own call (Asterisk leaves that to it)."""
    ari_lab.request("DELETE", f"/channels/{phone}")


def ended_by_asterisk(ari_lab: AriHarness, leg: str) -> None:
    """Asterisk hung up ``leg``'s call itself, as it does with the replaced dialog once an
    attended transfer is done."""
    ari_lab.wait_event("StasisEnd", lambda e: e["channel"]["id"] == leg, timeout=10)


def held_by_its_phone(call: DialplanCall) -> str:
    """The call reaches its phone, which talks, then holds the caller at 1.5 s, as phones do
    before a REFER. Returns the phone's channel id."""
    call.answer_phone()
    phone = call.phone
    assert phone is not None
    call.at(1.5)
    call.hold()
    return phone


def new_party_holds(call: DialplanCall | Call, talk_t: float) -> None:
    """The new phone talks 1.5 s, holds 1.5 s, unholds."""
    call.at(talk_t + 1.5)
    hold_t = call.hold()
    call.at(hold_t + 1.5)
    call.unhold()


# -- 1. REFER, blind ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("tenant", "expected", "mixmonitor"),
    [
        ("alpha", A, False),
        ("none", DEFAULT_TONE, False),  # control: Asterisk alone
        ("alpha", A, True),  # the call recorded with MixMonitor from the start (still a 2-party bridge)
    ],
)
@pytest.mark.usefixtures("agi_route")
def test_refer_blind_transfer(
    lab: LabAsterisk, ari_lab: AriHarness, tenant: str, expected: float, mixmonitor: bool
) -> None:
    """The phone holds the caller (as phones do before transferring), then transfers it by REFER
    to a second phone of the same tenant, which answers, talks and holds: ``expected`` during
    the transfer and on the new phone's hold, the new phone's voice in between."""
    name = f"refer_blind_{tenant}{'_mix' if mixmonitor else ''}"
    call = DialplanCall(ari_lab, lab, name, 8, f"{'m' if mixmonitor else ''}rdial-{name}-{tenant}@ooma-lab-xfer")
    first_phone = held_by_its_phone(call)
    call.at(2.5)
    call.refer(f"2-{name}")
    talk_t = call.answer_phone(phone=f"{name}_b")  # only a REFER that was taken gets there
    phone_hangs_up(ari_lab, first_phone)
    new_party_holds(call, talk_t)
    gap = assert_transferred(tones_heard(call.finish(), [A, B]), expected, expected, 1.5)
    print("silence between the transfer's music and the new phone:", gap, "s")
    if mixmonitor:  # the call really was being recorded all along
        mix = lab.recordings / f"{name}-mix.wav"
        deadline = time.monotonic() + 10
        while not (mix.exists() and mix.stat().st_size > 8000 * 2 * 5):  # written as the caller hangs up
            assert time.monotonic() < deadline, f"no MixMonitor recording {mix}"
            time.sleep(0.1)


# -- 2. REFER with Replaces (attended) --------------------------------------------------------------
@pytest.mark.parametrize(("tenant", "expected"), [("alpha", A), ("none", DEFAULT_TONE)])
@pytest.mark.usefixtures("agi_route")
def test_refer_attended_transfer(lab: LabAsterisk, ari_lab: AriHarness, tenant: str, expected: float) -> None:
    """The phone holds the caller, calls a second phone (consultation), then sends a REFER with
    Replaces naming the consultation's dialog: Asterisk bridges the caller with the second
    phone, which talks, then holds: ``expected`` during the consultation and on that hold."""
    name = f"refer_att_{tenant}"
    call = DialplanCall(ari_lab, lab, name, 9, f"rdial-{name}-{tenant}@ooma-lab-xfer")
    first_phone = held_by_its_phone(call)
    consultation, consult_t = call.consult(f"{name}_b")
    call.at(consult_t + 1.5)
    done_t = call.refer(f"2-{name}", replacing=consultation, phone=first_phone)
    ended_by_asterisk(ari_lab, consultation)  # the transfer is done: Asterisk hung the dialog it replaced
    phone_hangs_up(ari_lab, first_phone)  # then the phone ends the first call, as after a blind REFER
    new_party_holds(call, done_t)
    assert_transferred(tones_heard(call.finish(), [A, B]), expected, expected, 1.5)


# -- 3. transfer to a user of another tenant (DTMF blind) ------------------------------------------
@pytest.mark.parametrize(
    ("tenant", "target", "during", "held"),
    [
        ("alpha", "3", A, A),  # the route ran on the caller only: its class beats the beta phone's suggestion
        ("alpha", "4", A, B),  # the target runs the route again with beta: the new holder's tenant decides
        ("none", "3", DEFAULT_TONE, B),  # control: Asterisk alone plays the beta phone's moh_suggest
    ],
)
@pytest.mark.usefixtures("agi_route")
def test_dtmf_transfer_to_another_tenants_user(
    lab: LabAsterisk, ari_lab: AriHarness, tenant: str, target: str, during: float, held: float
) -> None:
    """A user of alpha transfers the caller blind (# + target) to a user of beta (endpoint
    lab-loop-beta: accountcode beta, moh_suggest tenant-beta), who answers, talks and holds."""
    name = f"xfer_beta{target}_{tenant}"
    call = DialplanCall(ari_lab, lab, name, 10, f"rdial-{name}-{tenant}@ooma-lab-xfer")
    new_party_holds(call, transfer_blind_by_dtmf(call, f"#{target}", f"{name}_b"))
    assert_transferred(tones_heard(call.finish(), [A, B]), during, held, 1.5)


@pytest.mark.parametrize(
    ("tenant", "during", "held"),
    [
        ("alpha", A, A),  # the caller keeps alpha's class: the first tenant, not the new holder
        ("none", DEFAULT_TONE, B),  # control: Asterisk alone plays the beta phone's moh_suggest
    ],
)
@pytest.mark.usefixtures("agi_route")
def test_dtmf_attended_transfer_to_another_tenants_user(
    lab: LabAsterisk, ari_lab: AriHarness, tenant: str, during: float, held: float
) -> None:
    """A user of alpha transfers the caller attended (*2 + 5) to a user of beta: consultation,
    then the alpha phone hangs up; the beta user talks, then holds. The transferee runs no
    dialplan in an attended transfer, so no route can give it the new tenant's class."""
    name = f"xferatt_beta_{tenant}"
    call = DialplanCall(ari_lab, lab, name, 11, f"rdial-{name}-{tenant}@ooma-lab-xfer")
    consult_t = transfer_attended_by_dtmf(ari_lab, call, "*25", "xferatt")
    new_party_holds(call, call.at(consult_t + 2.0))
    assert_transferred(tones_heard(call.finish(), [A, B]), during, held, 1.5)


# -- 4. a recorded (softmix) ARI bridge, then a REFER ----------------------------------------------
@pytest.mark.parametrize(
    ("target", "endpoint", "tenant", "with_handler", "during", "held"),
    [
        ("2", "PJSIP/lab-loop", "alpha", True, A, A),  # a second phone of alpha
        ("3", "PJSIP/lab-loop-beta", None, True, A, B),  # beta's user: accountcode beta
        ("3", "PJSIP/lab-loop-beta", None, False, None, None),  # control: Asterisk alone plays no music here
    ],
)
@pytest.mark.usefixtures("tenants")
def test_refer_in_a_recorded_ari_bridge(
    request: pytest.FixtureRequest,
    lab: LabAsterisk,
    ari_lab: AriHarness,
    target: str,
    endpoint: str,
    tenant: str | None,
    with_handler: bool,
    during: float | None,
    held: float | None,
) -> None:
    """The caller and alpha's phone in the provider's ARI bridge, recorded (softmix). The phone
    holds, then transfers by REFER; the provider's application takes the REFER (ari-only
    transfer handling) and puts the target's leg in the bridge in place of the phone's; the new
    phone answers, talks and holds. With the handler the caller hears alpha on the first hold
    and the new holder's tenant on the second; Asterisk alone plays no music in a softmix
    bridge: the caller hears the bridge (here the phones, which keep sending while holding)."""
    if with_handler:
        request.getfixturevalue("ari_handler")
    name = f"refer_rec{target}_{int(with_handler)}"
    call = Call(ari_lab, lab, name, "alpha", 8)
    call.record_bridge()
    call.transfers_by_app()
    call.at(1.5)
    call.hold()
    call.at(2.5)
    call.refer(f"{target}-{name}")
    assert call.take_transfer(endpoint, tenant) == f"{target}-{name}"
    new_party_holds(call, call.answer_phone(f"{name}_b"))
    windows = tones_heard(call.finish(), [A, B])
    if during is None or held is None:
        got = heard(windows)
        print("heard:", got)
        assert {t for t, _ in got} <= {TALK_TONE, None} and got[0][1] >= 7.0, got  # talk all along, no music
    else:
        assert_transferred(windows, during, held, 1.5)


# -- 5. the holder's suggestion first (preferchannelclass=no) --------------------------------------
@pytest.fixture
def suggestion_first(request: pytest.FixtureRequest, lab: LabAsterisk) -> Iterator[str]:
    """musiconhold.conf ``preferchannelclass=no``: the class a hold passes (the holder's
    ``moh_suggest``) now comes before the held channel's own. With the parameter ``"alpha"``,
    alpha's phone endpoint (``lab-loop``) suggests ``tenant-alpha`` as beta's suggests
    ``tenant-beta``; with ``"unset"`` it keeps chan_pjsip's default suggestion, ``default``.
    Restored afterwards. The parameter is the fixture's value."""
    edits = {"musiconhold.conf": ("preferchannelclass=yes", "preferchannelclass=no")}
    if request.param == "alpha":
        edits["pjsip.conf"] = ("[lab-loop]\ntype=endpoint\n", "[lab-loop]\ntype=endpoint\nmoh_suggest=tenant-alpha\n")
    originals = {name: (lab.etc / name).read_text() for name in ("musiconhold.conf", "pjsip.conf")}

    def configure(texts: dict[str, str]) -> None:
        for name, text in texts.items():
            (lab.etc / name).write_text(text)
        replies = [lab.cli(f"module reload {module}") for module in ("res_musiconhold.so", "res_pjsip.so")]
        assert all("reloaded successfully" in reply for reply in replies), replies

    for name, (old, _) in edits.items():
        assert originals[name].count(old) == 1, name
    try:
        configure({name: text.replace(*edits[name]) if name in edits else text for name, text in originals.items()})
        assert ("tenant-alpha" in lab.cli("pjsip show endpoint lab-loop")) == (request.param == "alpha")
        yield request.param
    finally:  # the shared lab goes back to the shipped order whatever happened (reset_lab reloads it)
        configure(originals)
    assert "tenant-alpha" not in lab.cli("pjsip show endpoint lab-loop")


@pytest.mark.parametrize(
    ("suggestion_first", "digits", "target", "during", "held"),
    [
        ("alpha", "#", "3", A, B),  # blind: the transfer's own hold passes no class, the caller's alpha plays
        ("alpha", "*2", "5", A, B),  # attended: what preferchannelclass=yes cannot get right (above)
        ("alpha", "#", "2", A, A),  # blind to a second phone of alpha: its suggestion is alpha's
        ("unset", "#", "2", A, DEFAULT_TONE),  # the same, alpha's phone left on the default suggestion
    ],
    indirect=["suggestion_first"],
)
@pytest.mark.usefixtures("agi_route")
def test_suggestion_first_lets_the_new_holders_tenant_decide(
    lab: LabAsterisk, ari_lab: AriHarness, suggestion_first: str, digits: str, target: str, during: float, held: float
) -> None:
    """With the holder's suggestion first, a DTMF transfer from a user of alpha (the route ran on
    the caller with alpha) to another user: alpha while the transfer is made (a DTMF transfer's
    own hold passes no class, so the caller's plays), then whatever the new holder's endpoint
    suggests on its hold, attended transfers included — its tenant's class if it suggests one,
    ``default`` if it was left on chan_pjsip's default."""
    name = f"suggest_{suggestion_first}_{'att' if digits == '*2' else 'blind'}{target}"
    call = DialplanCall(ari_lab, lab, name, 10, f"rdial-{name}-alpha@ooma-lab-xfer")
    if digits == "*2":
        consult_t = transfer_attended_by_dtmf(ari_lab, call, digits + target, "xferatt")
        new_party_holds(call, call.at(consult_t + 2.0))
    else:
        new_party_holds(call, transfer_blind_by_dtmf(call, digits + target, f"{name}_b"))
    assert_transferred(tones_heard(call.finish(), [A, B]), during, held, 1.5)


@pytest.mark.parametrize(
    ("suggestion_first", "expected"),
    [
        ("alpha", A),
        ("unset", DEFAULT_TONE),  # the handler sees a forwarded hold with alpha's class on the caller: it does nothing
    ],
    indirect=["suggestion_first"],
)
@pytest.mark.usefixtures("ari_handler")
def test_suggestion_first_on_the_ari_path(
    lab: LabAsterisk, ari_lab: AriHarness, suggestion_first: str, expected: float
) -> None:
    """An ARI bridge of two (it forwards holds), alpha's phone holds: with the suggestion first,
    Asterisk plays what the phone's endpoint suggests, whatever class is on the caller; the
    handler, which trusts the caller's class (preferchannelclass=yes, as shipped), leaves it."""
    call = Call(ari_lab, lab, f"suggest_ari_{suggestion_first}", "alpha", 6)
    hold_once_and_check(call, expected)
