"""Pure AGI parsing, the moh route's choice of tenant, and log-safe text."""

from __future__ import annotations

import pytest

from ooma_moh.agi.protocol import AgiRequest, ProtocolError, parse_env_line, parse_response, quote
from ooma_moh.agi.route import choose_tenant, decide, needs_variable
from ooma_moh.logsafe import logfmt, printable
from ooma_moh.resolve import Resolution


def test_parse_env_line() -> None:
    assert parse_env_line("agi_channel: PJSIP/a-1\n") == ("agi_channel", "PJSIP/a-1")
    assert parse_env_line('agi_callerid: "A: B" <1>\n') == ("agi_callerid", '"A: B" <1>')
    assert parse_env_line("\n") is None
    with pytest.raises(ProtocolError):
        parse_env_line("GET / HTTP/1.1\n")


def test_parse_response() -> None:
    assert parse_response("200 result=1 (tenant-a)\n") == parse_response("200 result=1 (tenant-a)")
    r = parse_response("200 result=1 (tenant-a)")
    assert (r.code, r.result, r.data, r.ok) == (200, "1", "tenant-a", True)
    assert parse_response("200 result=0").result == "0"
    assert not parse_response("200 result=-1").ok
    assert parse_response("HANGUP").code == 511
    assert parse_response("511 Command Not Permitted on a dead channel").code == 511
    with pytest.raises(ProtocolError):
        parse_response("hello")


def test_quote_escapes() -> None:
    assert quote('a "b" \\ c\nd') == '"a \\"b\\" \\\\ c d"'


def request(**env: str) -> AgiRequest:
    return AgiRequest.from_env({k: v for k, v in env.items()})


def test_request_from_fastagi_env() -> None:
    r = request(agi_network_script="moh?tenant=acme&x=1", agi_arg_1="other", agi_arg_2="")
    assert (r.script, r.query, r.args) == ("moh", {"tenant": "acme", "x": "1"}, ("other", ""))
    assert request(agi_request="agi://127.0.0.1:4573/moh").script == "moh"


def test_tenant_sources_in_order() -> None:
    assert choose_tenant(request(agi_network_script="moh?tenant=q", agi_arg_1="a"), "v") == ("q", "argument")
    assert choose_tenant(request(agi_network_script="moh", agi_arg_1="a"), "v") == ("a", "argument")
    assert needs_variable(request(agi_network_script="moh", agi_arg_1="a")) is None
    r = request(agi_network_script="moh", agi_accountcode="acct")
    assert needs_variable(r) == "GET VARIABLE OOMA_MOH_TENANT\n"
    assert choose_tenant(r, "v") == ("v", "variable")
    assert choose_tenant(r, None) == ("acct", "accountcode")
    assert choose_tenant(request(agi_network_script="moh", agi_accountcode="unknown"), None) == (None, "none")


def test_decision_commands() -> None:
    d = decide("acme", "argument", Resolution("tenant-acme", None))
    assert d.commands() == [
        'SET VARIABLE CHANNEL(musicclass) "tenant-acme"\n',
        'SET VARIABLE OOMA_MOH_CLASS "tenant-acme"\n',
    ]
    assert decide(None, "none", None).moh_class == "default"


@pytest.mark.parametrize(
    "raw, logged",
    [
        ("acme", "acme"),
        ("a\nFAKE LINE", "a\\nFAKE LINE"),
        ("\r\t\x00\x7f", "\\r\\t\\x00\\x7f"),
        ("x\x1b[31mred", "x\\x1b[31mred"),  # ANSI colour: ESC escaped, the rest is harmless text
        ("\x85\u2028\u202e", "\\x85\\u2028\\u202e"),  # NEL, line separator, right-to-left override
        ("caf\u00e9 \U0001f600", "caf\\xe9 \\U0001f600"),  # printable non-ASCII too: output is ASCII
        ("back\\slash", "back\\\\slash"),  # doubled, so an escape in the output is never ambiguous
        (None, "None"),
        (ValueError("bad\nline"), "bad\\nline"),
    ],
)
def test_printable_escapes_everything_that_is_not_printable_ascii(raw: object, logged: str) -> None:
    assert printable(raw) == logged
    assert printable(raw).isascii() and printable(raw).isprintable()


def test_printable_bounds_length_without_splitting_escapes() -> None:
    assert printable("x" * 100) == "x" * 100
    assert printable("x" * 101) == "x" * 100 + "..."
    assert printable("x" * 10_000_000, limit=20) == "x" * 20 + "..."
    assert printable("ab\x1bcd", limit=5) == "ab..."  # "\x1b" would not fit whole: cut before it
    assert printable("ab\x1bcd", limit=6) == "ab\\x1b..."
    assert max(len(printable(chr(c) * 500)) for c in range(0x300)) <= 100 + 3


def test_logfmt_quotes_what_could_pass_for_more_fields() -> None:
    assert logfmt("tenant-acme") == "tenant-acme"
    assert logfmt("x class=tenant-vip") == '"x class=tenant-vip"'
    assert logfmt('a"b') == '"a\\"b"'
    assert logfmt("") == '""'
    assert logfmt("a\nb c") == '"a\\nb c"'
    assert logfmt("a\\") == "a\\\\"  # a trailing backslash is doubled: it cannot escape a closing quote
