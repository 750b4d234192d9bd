"""Outside text made safe for a log line: pure functions, and the two formatters of the
long-running commands' log lines (text and JSON); no log calls here.

Anything a peer, a dialplan or an uploader controls (tenant values, accountcodes, script names,
channel names and variables, protocol garbage, exception text quoting them) goes through
:func:`printable` or :func:`logfmt`
before it reaches a log call or stderr. A raw newline would forge a whole log line, a raw ``ESC``
could repaint the terminal of whoever tails the log, and an unbounded value would let one request
write kilobytes per line.
"""

from __future__ import annotations

import datetime
import json
import logging
import re

LIMIT = 100
ELLIPSIS = "..."  # ASCII, so the output is pure ASCII whatever the log handler's encoding

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_FIELD_BREAKERS = frozenset(' "=')


def _escape(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    if " " <= char <= "~":
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(value: object, limit: int = LIMIT) -> str:
    """``value`` as printable ASCII on one line, at most ``limit`` characters plus ``...``.

    Backslash, control characters (``\\n``, ``\\r``, ``ESC``, DEL, C1) and every non-ASCII
    character are escaped the way Python writes them in a literal (``\\n``, ``\\x1b``, ``\\u2028``);
    backslash is doubled so an escape in the output always means the character was there. The cut
    falls between escapes, never inside one. Non-strings are passed through ``str`` first.
    """
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit and text.isascii() and text.isprintable() and "\\" not in text:
        return text  # the common case: nothing to escape
    out: list[str] = []
    size = 0
    for char in text:  # stops at the limit, so a huge value costs no more than a short one
        piece = _escape(char)
        if size + len(piece) > limit:
            return "".join(out) + ELLIPSIS
        out.append(piece)
        size += len(piece)
    return "".join(out)


def logfmt(value: object, limit: int = LIMIT) -> str:
    """:func:`printable`, double-quoted (``"`` escaped) when it is empty or holds a space, ``"`` or
    ``=``: as a ``key=value`` field it then cannot pass for more fields (``tenant=x class=vip``)."""
    text = printable(value, limit)
    if text and not _FIELD_BREAKERS.intersection(text):
        return text
    return '"' + text.replace('"', '\\"') + '"'


#: credentials of the HTTP side: bearer tokens (``omh_<id>_<secret>``), login links and session
#: cookies (``<id>_<secret>``), also percent-encoded; a log line never shows their secret
_CREDENTIAL = re.compile(r"(omh_[0-9a-f]{8}|[0-9a-f]{16})(?:_|%5[Ff])[A-Za-z0-9_%-]{16,}")


#: the password of a URL's ``user:password@`` (``postgresql://``, ``s3://``…), also of a mistyped
#: one (``postgres//user:pw@host``: psycopg quotes the whole string it could not parse)
_URL_PASSWORD = re.compile(r"(//[^\s:/@\"'?#]*:)[^\s@\"']+(?=@)")
#: ``password=…`` of a libpq connection string or a URL's query, quoted (``'a b'``) or not
_KEY_PASSWORD = re.compile(r"""(\bpassword\s*=\s*)(?:'(?:[^'\\]|\\.)*'?|[^\s&"']+)""", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with the secret of every credential it quotes replaced by ``<secret>``: the HTTP
    side's tokens, links and cookies (the id, which names the credential in ``tokens list``,
    stays), and the password of a database URL or connection string (``OOMA_MOH_DATABASE_URL``,
    which library errors may quote whole, even mistyped).

    Each expression runs only where a match is possible (every log line of the long-running
    commands comes through here, and the three scans were ~10 µs a line): a credential needs 8 hex
    digits right before a ``_`` or ``%5F``; a URL's password an ``@``; a ``password=`` the word,
    in any case (``casefold``: what the expression's IGNORECASE matches, it finds)."""
    if _may_quote_credential(text):
        text = _CREDENTIAL.sub(lambda m: f"{m.group(1)}_<secret>", text)
    if "@" in text:
        text = _URL_PASSWORD.sub(r"\1<secret>", text)
    if "password" in text.casefold():
        text = _KEY_PASSWORD.sub(r"\1<secret>", text)
    return text


_HEX_DIGITS = frozenset("0123456789abcdef")


def _may_quote_credential(text: str) -> bool:
    """Whether some ``_``/``%5F``/``%5f`` in ``text`` follows 8 hex digits: so does every match of
    :data:`_CREDENTIAL` (the ``omh_`` id's 8, or the last 8 of a link or cookie id's 16)."""
    for separator in ("_", "%5F", "%5f"):
        at = text.find(separator, 8)
        while at != -1:
            if _HEX_DIGITS.issuperset(text[at - 8 : at]):
                return True
            at = text.find(separator, at + 1)
    return False


class RedactingFormatter(logging.Formatter):
    """``time LEVEL logger: message`` lines; every line, tracebacks included, through :func:`redact`
    (aiohttp logs raw request lines and headers it cannot parse)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601, milliseconds), ``level``, ``logger``,
    ``message`` and, when there is one, ``exception`` (the traceback text), each through
    :func:`redact`. Non-ASCII and control characters are escaped by JSON itself, so a record is
    always exactly one line."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        entry = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = redact(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=True)


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` (``text`` or ``json``)."""
    return JsonFormatter() if log_format == "json" else RedactingFormatter()
