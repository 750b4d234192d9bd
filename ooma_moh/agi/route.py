"""The ``moh`` route: which tenant a dialplan call belongs to, and the class to put on it.

The tenant comes from :func:`ooma_moh.resolve.tenant_of_call` (the argument, ``OOMA_MOH_TENANT``,
the accountcode), as for the ARI handler. The route never breaks a call: anything wrong gives
``default`` and a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..model import CLASS_VARIABLE, DEFAULT_CLASS, TENANT_VARIABLE
from ..resolve import Resolution, tenant_of_call
from .protocol import AgiRequest, get_variable, set_variable

ROUTE = "moh"


@dataclass(frozen=True)
class Decision:
    """The class for one call and why."""

    tenant: str | None
    source: str
    moh_class: str
    reason: str | None = None

    def variables(self) -> list[tuple[str, str]]:
        """What to set on the channel: its music class, and OOMA_MOH_CLASS for the dialplan."""
        return [("CHANNEL(musicclass)", self.moh_class), (CLASS_VARIABLE, self.moh_class)]

    def commands(self) -> list[str]:
        """:meth:`variables` as AGI command lines."""
        return [set_variable(name, value) for name, value in self.variables()]

    def lines(self) -> tuple[bytes, ...]:
        """:meth:`commands` encoded, as written to the socket (built once per class)."""
        return _lines_of(self.moh_class)


@lru_cache(maxsize=4096)
def _lines_of(moh_class: str) -> tuple[bytes, ...]:
    return tuple(line.encode() for line in Decision(None, "", moh_class).commands())


def tenant_from_request(request: AgiRequest) -> str | None:
    """The tenant named by the request itself (query or first argument), if any."""
    return request.query.get("tenant") or (request.args[0] if request.args and request.args[0] else None)


def needs_variable(request: AgiRequest) -> str | None:
    """The command to fetch ``OOMA_MOH_TENANT`` when the request names no tenant, else None."""
    return None if tenant_from_request(request) else get_variable(TENANT_VARIABLE)


def choose_tenant(request: AgiRequest, variable: str | None) -> tuple[str | None, str]:
    """(tenant, source) of a dialplan call: :func:`~ooma_moh.resolve.tenant_of_call` on the
    request's argument, the variable's value and the environment's accountcode."""
    return tenant_of_call(
        argument=tenant_from_request(request), variable=variable, accountcode=request.env.get("agi_accountcode")
    )


def decide(tenant: str | None, source: str, resolved: Resolution | None) -> Decision:
    """The decision once the tenant is known and (if there is one) resolved."""
    if tenant is None or resolved is None:
        return Decision(None, source, DEFAULT_CLASS, "no tenant on the call")
    moh_class, reason = resolved
    return Decision(tenant, source, moh_class, reason)
