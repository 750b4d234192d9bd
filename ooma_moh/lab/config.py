"""The lab Asterisk's configuration and ports: the operators' own files from
:mod:`ooma_moh.asterisk_conf` with paths, ports and the ARI password replaced, plus the templates
in ``conf/`` beside this module (:func:`render_config`); free loopback ports for its listeners
(:func:`free_port`)."""

from __future__ import annotations

import socket
import string
from importlib.resources import files
from pathlib import Path

from ..asterisk_conf import sample_names, sample_text
from ..errors import AsteriskError

DEFAULT_TONE = 300.0
TALK_TONE = 1000.0
LAB_ARI_USER = "ooma-moh"
#: The data home the operator files are written for (docs/asterisk.md); the lab's replaces it.
OPERATOR_HOME = "/var/lib/ooma-moh"


PLACEHOLDER = r"""
    @(?:
      (?P<escaped>(?!))            |  # no escape: "@{" never occurs in Asterisk configuration
      \{(?P<braced>[a-z_]+)\}      |
      (?P<named>(?!))              |
      (?P<invalid>\{)                # "@{" not closing a name: a broken placeholder, ValueError
    )
    """


class ConfTemplate(string.Template):
    """A lab configuration template: ``@{name}`` placeholders only. Not ``$``, which Asterisk's
    dialplan uses (``${EXTEN}``), nor ``{}`` for :meth:`str.format`, which it uses too; a bare
    ``@`` (``Local/x@context``) is left alone."""

    delimiter = "@"
    pattern = PLACEHOLDER  # type: ignore[assignment]  # a str: string.Template compiles it


def lab_templates() -> dict[str, str]:
    """The lab's own configuration templates (``conf/*.conf`` beside this module), by file name."""
    conf = files(__package__).joinpath("conf")
    return {
        entry.name: entry.read_text(encoding="utf-8")
        for entry in sorted(conf.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".conf")
    }


def render_config(
    *,
    shared: Path,
    etc: Path,
    moddir: str,
    home: Path,
    default_moh: Path,
    talk_moh: Path,
    recordings: Path,
    ari_password: str,
    http_port: int,
    sip_port: int,
) -> dict[str, str]:
    """The lab's whole Asterisk configuration, file name -> text (see the module docstring).

    ``moddir`` is the module directory as seen inside the chroot; the other paths are the shared
    directory's, valid inside the chroot too. Every ``@{name}`` of a template must be filled:
    an unknown placeholder raises :class:`KeyError`, a malformed one :class:`ValueError`, instead
    of reaching Asterisk.
    """
    config: dict[str, str] = {}
    for name in sample_names():
        text = sample_text(name)
        text = text.replace(OPERATOR_HOME, str(home))
        text = text.replace("directory=/var/lib/asterisk/moh", f"directory={default_moh}")
        text = text.replace("password=CHANGE_ME", f"password={ari_password}")
        text = text.replace("bindport=8088", f"bindport={http_port}")
        text = text.replace("bind=127.0.0.1:5060", f"bind=127.0.0.1:{sip_port}")
        config[name] = text
    values = {
        "etc": str(etc),
        "moddir": moddir,
        "shared": str(shared),
        "sip_port": str(sip_port),
        "talk": str(talk_moh),
        "recordings": str(recordings),
    }
    for name, template in lab_templates().items():
        text = ConfTemplate(template).substitute(values)
        config[name] = config[name] + "\n" + text if name in config else text
    return config


def free_port(tries: int = 50) -> int:
    """A port number on 127.0.0.1 that nothing uses right now, for TCP and UDP alike (SIP listens
    on both): the kernel picks a free TCP port, and one that some UDP socket holds (another lab's
    SIP or RTP, with labs running side by side) is passed over for the next."""
    for _ in range(tries):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AsteriskError(f"no port of 127.0.0.1 free for both TCP and UDP in {tries} tries")
