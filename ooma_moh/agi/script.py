"""``ooma-moh-agi``: the classic AGI entry point (``AGI(ooma-moh-agi[,tenant])`` over stdin/stdout).

Same route as the FastAGI server, driven by pyst2's ``AGI`` (safe here: this is a process's main
thread, where its SIGHUP handler may be installed). It never fails the call: any problem ends in
``default`` and a line on stderr, which Asterisk logs line by line, so what came from the channel
is written through :mod:`.logsafe` (a newline in it would make a line of its own).
"""

from __future__ import annotations

import os
import sys

from asterisk.agi import AGI, AGIException

from ..app import open_catalog
from ..config import load_settings
from ..errors import OomaMohError
from ..logsafe import logfmt, printable
from ..model import DEFAULT_CLASS
from ..resolve import ClassResolver, Resolution
from .protocol import AgiRequest
from .route import TENANT_VARIABLE, choose_tenant, decide, needs_variable


def main() -> int:
    """Run the ``moh`` route for the channel Asterisk hands us on stdin/stdout."""
    with open(os.devnull, "w") as quiet:
        try:
            agi = AGI(stdin=sys.stdin, stdout=sys.stdout, stderr=quiet)
        except (OSError, ValueError) as exc:
            print(f"ooma-moh-agi: no AGI environment: {printable(exc)}", file=sys.stderr)
            return 0
        request = AgiRequest.from_env(agi.env)
        try:
            variable = agi.get_variable(TENANT_VARIABLE) if needs_variable(request) else None
        except AGIException:
            variable = None
        tenant, source = choose_tenant(request, variable or None)
        resolved = None
        if tenant is not None:
            try:
                settings = load_settings()
                catalog = open_catalog(settings, writable=False)  # Asterisk's user: create nothing
                resolved = ClassResolver(catalog, settings.class_prefix).resolve(tenant)
            except OomaMohError as exc:
                resolved = Resolution(DEFAULT_CLASS, f"catalog unavailable: {printable(exc)}")
        decision = decide(tenant, source, resolved)
        try:
            for name, value in decision.variables():
                agi.set_variable(name, value)
        except AGIException as exc:
            print(f"ooma-moh-agi: {printable(exc)}", file=sys.stderr)
        print(f"ooma-moh-agi: tenant={logfmt(decision.tenant)} source={decision.source}"
              f" class={logfmt(decision.moh_class)}"
              + (f" fallback={logfmt(decision.reason)}" if decision.reason else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
