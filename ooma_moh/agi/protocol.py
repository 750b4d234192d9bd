"""The AGI protocol as pure functions: the environment block, responses, commands, requests.

Response lines are matched with pyst2's own expressions (``asterisk.agi.re_code``/``re_kv``), so
classic and FastAGI paths read Asterisk the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs

from asterisk.agi import re_code, re_kv

MAX_ENV_LINES = 200
MAX_LINE_BYTES = 8192


class ProtocolError(ValueError):
    """The peer did not speak AGI. The message quotes (at most 60 characters of) the peer's text
    as it came: log it through :func:`.logsafe.printable`, like any outside text."""


def parse_env_line(line: str) -> tuple[str, str] | None:
    """``agi_key: value`` -> (key, value); None for the blank line that ends the block."""
    line = line.rstrip("\r\n")
    if line == "":
        return None
    key, sep, value = line.partition(":")
    if not sep or not key.startswith("agi_"):
        raise ProtocolError(f"not an AGI environment line: '{line[:60]}'")
    return key.strip(), value.strip()


@dataclass(frozen=True)
class AgiResponse:
    """A parsed response: status code, ``result`` value and its parenthesised data."""

    code: int
    result: str = ""
    data: str = ""

    @property
    def ok(self) -> bool:
        """200 with a result other than -1."""
        return self.code == 200 and self.result != "-1"


def parse_response(line: str) -> AgiResponse:
    """Parse one response line such as ``200 result=1 (value)``; ``HANGUP`` is code 511."""
    line = line.strip()
    known = _KNOWN_RESPONSES.get(line)
    return known if known is not None else _parse_response(line)


def _parse_response(line: str) -> AgiResponse:
    if line == "HANGUP":
        return AgiResponse(511, "-1", "hangup")
    match = re_code.search(line)
    if not match or not match.group(1):
        raise ProtocolError(f"not an AGI response: '{line[:60]}'")
    code, rest = int(match.group(1)), match.group(2)
    for key, value, data in re_kv.findall(rest):
        if key == "result":
            return AgiResponse(code, value, data)
    return AgiResponse(code)


#: the answers to SET and GET VARIABLE, parsed once (responses are immutable)
_KNOWN_RESPONSES = {line: _parse_response(line) for line in ("200 result=1", "200 result=0", "HANGUP")}


def quote(value: str) -> str:
    """An AGI command argument, double-quoted with quotes and backslashes escaped."""
    cleaned = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ").replace("\r", " ")
    return f'"{cleaned}"'


def set_variable(name: str, value: str) -> str:
    """The ``SET VARIABLE`` command line."""
    return f"SET VARIABLE {name} {quote(value)}\n"


def get_variable(name: str) -> str:
    """The ``GET VARIABLE`` command line."""
    return f"GET VARIABLE {name}\n"


@dataclass(frozen=True)
class AgiRequest:
    """What Asterisk asked for: the script (FastAGI path), its query, its arguments, the env."""

    script: str
    query: dict[str, str]
    args: tuple[str, ...]
    env: dict[str, str]

    @classmethod
    def from_env(cls, env: dict[str, str]) -> AgiRequest:
        """Build a request from the environment block (FastAGI or classic)."""
        raw = env.get("agi_network_script") or env.get("agi_request", "")
        if "://" in raw:  # classic agi_request may be the whole URL
            raw = raw.split("/", 3)[3] if raw.count("/") >= 3 else ""
        path, _, query = raw.partition("?")
        args = []
        for i in range(1, 64):
            if f"agi_arg_{i}" not in env:
                break
            args.append(env[f"agi_arg_{i}"])
        parsed = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        return cls(path.strip("/"), parsed, tuple(args), env)
