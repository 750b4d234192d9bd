"""systemd's service notification protocol (sd_notify), standard library only.

A ``Type=notify`` unit passes ``$NOTIFY_SOCKET`` (a path, or an abstract socket written with a
leading ``@``); the service sends ``READY=1`` once it serves, ``STOPPING=1`` when it begins to stop,
``STATUS=...`` for ``systemctl status``, and with ``WatchdogSec=`` ``WATCHDOG=1`` more often than
``$WATCHDOG_USEC``. Outside systemd every function does nothing and says so (False / None).
A notification that cannot be delivered is reported by the return value, never raised: a service
does not stop serving calls because its supervisor's socket went away.
"""

from __future__ import annotations

import asyncio
import os
import socket

#: Longest a notification may block (the manager reads its socket at once; this bounds a stall).
SEND_TIMEOUT_S = 1.0


def _address() -> str | None:
    path = os.environ.get("NOTIFY_SOCKET", "")
    if path.startswith("@"):
        return "\0" + path[1:]  # abstract namespace
    if path.startswith("/"):
        return path
    return None  # unset, empty, or a kind this module does not speak (e.g. vsock:)


def notify(state: str) -> bool:
    """Send ``state`` (newline-separated ``KEY=VALUE`` assignments) to the service manager.
    False, having done nothing, when there is no ``$NOTIFY_SOCKET``; False if it could not be sent."""
    address = _address()
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.connect(address)
            sock.sendall(state.encode("utf-8", "replace"))
    except OSError:
        return False
    return True


def ready() -> bool:
    """The service is up (listening, subscribed): ``systemctl start`` returns."""
    return notify("READY=1")


def stopping() -> bool:
    """The service has begun to shut down."""
    return notify("STOPPING=1")


def status(text: str) -> bool:
    """One line of free text shown by ``systemctl status`` (line breaks become spaces)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog_interval() -> float | None:
    """Seconds between two ``WATCHDOG=1`` (half of ``$WATCHDOG_USEC``), or None when no watchdog
    is asked of this process (variable unset or invalid, or ``$WATCHDOG_PID`` names another one)."""
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None  # meant for another process (e.g. we were forked from the service's main one)
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None


async def watchdog(interval_override: float | None = None) -> None:
    """Send ``WATCHDOG=1`` now and then every ``watchdog_interval()`` seconds (or
    ``interval_override``) until cancelled; returns at once when no watchdog is asked. Run it as a
    task of the service's event loop: a loop that stalls stops the pings and systemd restarts it."""
    interval = watchdog_interval()
    if interval is None:
        return
    if interval_override is not None:
        interval = interval_override
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval)
