"""``ooma-moh-agi``: the classic AGI entry point (``AGI(ooma-moh-agi[,tenant])`` over stdin/stdout).

Same route as the FastAGI server, driven by pyst2's ``AGI`` (safe here: this is a process's main
thread, where its SIGHUP handler may be installed). Under Asterisk it never fails the call: any
problem ends in ``default`` and a line on stderr, which Asterisk logs line by line, so what came
from the channel is written through :mod:`.logsafe` (a newline in it would make a line of its own).

Run by hand it explains itself instead: ``--help`` prints the usage (exit 0); an unknown option, a
terminal on stdin or a stdin that holds no AGI environment is one line on stderr and exit 2. An
option can never be a tenant (a tenant id starts with a letter or a digit), so Asterisk's
arguments are never taken for one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from asterisk.agi import AGI, AGIException

from ..app import hold_resolver
from ..config import load_settings
from ..errors import OomaMohError
from ..logsafe import logfmt, printable
from ..model import DEFAULT_CLASS, TENANT_VARIABLE
from ..resolve import Resolution
from .protocol import AgiRequest
from .route import choose_tenant, decide, needs_variable

PROG = "ooma-moh-agi"
USAGE = f"""\
usage: {PROG} [TENANT]

The classic AGI script of ooma-moh: Asterisk runs it, one process per call, from the dialplan:

    same => n,AGI({PROG},acme)     ; tenant given as argument
    same => n,AGI({PROG})          ; tenant from OOMA_MOH_TENANT, else the channel's accountcode

It sets CHANNEL(musicclass) and OOMA_MOH_CLASS on the channel: tenant-<id> for a tenant on its
own file, else default. It never fails the call; it writes one line on stderr (Asterisk's log).
Asterisk hands it the AGI environment on stdin; it is not meant to be run from a terminal.

It reads the catalog (read-only) of OOMA_MOH_HOME, or the settings file OOMA_MOH_CONFIG: give
Asterisk's environment one of them. Prefer the FastAGI server (`ooma-moh serve agi`) for
traffic; see docs/agi.md.

options:
  -h, --help  show this message and exit
"""


class UsageError(Exception):
    """A bad invocation by hand: said in one line, exit status 2."""


def check_invocation(argv: Sequence[str], stdin_is_terminal: bool) -> bool:
    """True if ``argv`` (without the program name) asks for the usage; raises
    :class:`UsageError` for an unknown option or a terminal on stdin."""
    if argv and argv[0].startswith("-"):
        if argv[0] in ("-h", "--help"):
            return True
        raise UsageError(f"unknown option {printable(argv[0], 40)!r} (usage: {PROG} [TENANT]; see --help)")
    if stdin_is_terminal:
        raise UsageError(
            f"stdin is a terminal, not an AGI channel: Asterisk runs this script as AGI({PROG}[,TENANT]) (see --help)"
        )
    return False


def agi_environment_problem(env: dict[str, str]) -> str | None:
    """Why ``env`` (what pyst2 read up to the first blank line) is not an AGI environment, or None."""
    if not env:
        return f"no AGI environment on stdin (Asterisk runs this script as AGI({PROG}[,TENANT]); see --help)"
    if "agi_request" not in env or not all(key.startswith("agi_") for key in env):
        return (
            f"stdin is not an AGI environment (no agi_request line; Asterisk runs this script as"
            f" AGI({PROG}[,TENANT]); see --help)"
        )
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``moh`` route for the channel Asterisk hands us on stdin/stdout."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if check_invocation(args, sys.stdin.isatty()):
            sys.stdout.write(USAGE)
            return 0
    except UsageError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    with open(os.devnull, "w") as quiet:
        try:
            agi = AGI(stdin=sys.stdin, stdout=sys.stdout, stderr=quiet)
        except (OSError, ValueError) as exc:  # unreadable or undecodable stdin
            print(f"{PROG}: no AGI environment on stdin: {printable(exc)}", file=sys.stderr)
            return 2
        if problem := agi_environment_problem(agi.env):
            print(f"{PROG}: {problem}", file=sys.stderr)
            return 2
        request = AgiRequest.from_env(agi.env)
        try:
            variable = agi.get_variable(TENANT_VARIABLE) if needs_variable(request) else None
        except (AGIException, ValueError):  # ValueError: pyst2 on an empty answer (the channel is gone)
            variable = None
        tenant, source = choose_tenant(request, variable or None)
        resolved = None
        if tenant is not None:
            try:
                # Asterisk's user: creates nothing; this node's classes when the catalog is down
                resolved = hold_resolver(load_settings()).resolve(tenant)
            except OomaMohError as exc:
                resolved = Resolution(DEFAULT_CLASS, f"catalog unavailable: {printable(exc)}")
        decision = decide(tenant, source, resolved)
        try:
            for name, value in decision.variables():
                agi.set_variable(name, value)
        except (AGIException, ValueError, OSError) as exc:
            reason = exc if isinstance(exc, AGIException) else "the channel went away before the class was set"
            print(f"{PROG}: {printable(reason)}", file=sys.stderr)
        print(
            f"{PROG}: tenant={logfmt(decision.tenant)} source={decision.source}"
            f" class={logfmt(decision.moh_class)}"
            + (f" fallback={logfmt(decision.reason)}" if decision.reason else ""),
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
