"""Asterisk's CLI as ooma-moh asks it: ``OOMA_MOH_ASTERISK_CLI`` (default ``asterisk -rx``) plus
one command. Output parsers for the commands we use are pure functions beside it."""

from __future__ import annotations

import re
import subprocess

from .errors import AsteriskError


class AsteriskCli:
    """Runs one CLI command at a time through an argv prefix such as ``["asterisk", "-rx"]``."""

    def __init__(self, argv: list[str], timeout: float = 30.0) -> None:
        self.argv = argv
        self.timeout = timeout

    def run(self, command: str) -> str:
        """The command's output; ``AsteriskError`` if Asterisk cannot be asked."""
        try:
            proc = subprocess.run(
                [*self.argv, command], capture_output=True, text=True, timeout=self.timeout, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AsteriskError(f"cannot run {' '.join(self.argv)} {command!r}: {exc}") from None
        if proc.returncode != 0 or "Unable to connect to remote asterisk" in proc.stdout:
            detail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise AsteriskError(f"asterisk CLI {command!r} failed: {detail[0]}")
        return proc.stdout


def parse_realtime_row(output: str) -> dict[str, str] | None:
    """Columns of ``realtime load ...`` output, or None for "No rows found"."""
    if "No rows found" in output:
        return None
    row = {}
    for line in output.splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("-") and parts[0] != "Column":
            row[parts[0]] = parts[1].strip()
        elif len(parts) == 1 and not parts[0].startswith("-"):
            row[parts[0]] = ""
    return row


def parse_moh_classes(output: str) -> dict[str, dict[str, str]]:
    """``moh show classes`` as class -> {"Mode": ..., "Directory": ...}."""
    classes: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in output.splitlines():
        match = re.match(r"Class: (\S+)", line)
        if match:
            current = classes.setdefault(match.group(1), {})
        elif current is not None and ":" in line:
            key, value = line.strip().split(":", 1)
            current[key.strip()] = value.strip()
    return classes
