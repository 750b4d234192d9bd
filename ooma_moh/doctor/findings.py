"""What doctor reports, and the rules it judges by — no I/O here.

- :class:`Finding`, its statuses and how it prints, and the exit status of a run;
- ffmpeg: what the uploads and renditions need, read from ``ffmpeg -decoders`` and the like;
- permission bits: what a user (:class:`AsteriskUser`) lacks on a file, by owner, group or other;
- Asterisk: the modules ooma-moh needs, what a failed first ARI request means;
- the probe call: the probe class's audio, and whether what a channel heard is a class's file.
"""

from __future__ import annotations

import array
import math
import os
import re
import stat
import sys
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import Settings
from ..errors import AriRequestFailed, OomaMohError
from ..logsafe import redact

OK, WARN, FAIL = "ok", "warn", "fail"
LABELS = {OK: "ok", WARN: "warn", FAIL: "FAIL"}
PROBE_RATE = 16000


@dataclass(frozen=True)
class Finding:
    """One result of ``doctor``: ``status`` is ``ok``, ``warn`` or ``fail``; ``advice`` says
    what to do (empty when there is nothing to do)."""

    check: str
    status: str
    found: str
    advice: str = ""

    def line(self) -> str:
        """The finding as one line of text (a password it quotes redacted)."""
        text = f"{LABELS[self.status]:<4} {self.check:<16} {self.found}"
        return redact(text + (f" To do: {self.advice}" if self.advice else ""))

    def as_dict(self) -> dict[str, str]:
        """The finding as JSON-able data (a password it quotes redacted)."""
        return {"check": self.check, "status": self.status, "found": redact(self.found), "advice": redact(self.advice)}


def one_line(text: str, limit: int = 300) -> str:
    """``text`` on one line, at most ``limit`` characters, with the secrets it quotes redacted
    (:func:`.logsafe.redact`: a database URL's password that an error message echoes)."""
    text = " ".join(redact(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def not_checked(name: str, why: str) -> Finding:
    """A check that could not run because of an earlier failure."""
    return Finding(name, WARN, f"not checked: {why}", "fix the failure above, then run doctor again")


def how_to_publish(settings: Settings) -> str:
    """Advice that makes this host publish its classes: ``ooma-moh sync --all`` on a single host;
    on a cluster node (``database_url``) its agent, which publishes by itself (never ``sync``)."""
    if settings.database_url:
        return (
            "make sure this node's agent runs (`systemctl start ooma-moh-agent`, or `ooma-moh agent`): it"
            " publishes every class by itself (`ooma-moh nodes` shows it)"
        )
    return "run `ooma-moh sync --all`"


def exit_status(findings: Iterable[Finding]) -> int:
    """0 when nothing failed (warnings allowed), else 1."""
    return 1 if any(f.status == FAIL for f in findings) else 0


# -- ffmpeg --------------------------------------------------------------------------------------

#: What the uploads and renditions need from ffmpeg: kind -> (required names, names of which one
#: is enough per alternative). Decoders of the rarer containers are only recommended.
FFMPEG_NEEDS: dict[str, tuple[str, ...]] = {
    "demuxers": ("wav", "mp3", "f32le"),
    "decoders": ("pcm_s16le", "mp3float|mp3"),
    "filters": (
        "aresample",
        "aformat",
        "asplit",
        "ebur128",
        "anullsink",
        "volume",
        "alimiter",
        # the analysis and the loop (analysis.py)
        "asetnsamples",
        "astats",
        "volumedetect",
        "silencedetect",
        "highpass",
        "lowpass",
        "atrim",
        "aeval",
        "acrossfade",
    ),
    "encoders": ("pcm_s16le", "pcm_mulaw", "pcm_alaw", "adpcm_g722"),
    "muxers": ("s16le", "mulaw", "alaw", "g722", "f32le"),
}
FFMPEG_WANTS: dict[str, tuple[str, ...]] = {
    "demuxers": ("ogg", "flac", "mov", "aac", "matroska"),
    # music under a voice (mix.py, voiceover.py)
    "filters": ("sidechaingate", "amix", "concat", "apad", "adelay", "afade", "aloop"),
    "decoders": ("vorbis|libvorbis", "opus|libopus", "flac", "aac|aac_fixed", "alac"),
}


def parse_ffmpeg_list(text: str) -> set[str]:
    """Names in the output of ``ffmpeg -decoders`` (``-encoders``, ``-filters``, ``-demuxers``,
    ``-muxers``): the second column, split at commas, plus the codec a coder implements
    (``g722 ... (codec adpcm_g722)``)."""
    names: set[str] = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 2 or fields[1] == "=" or not re.fullmatch(r"[A-Za-z.|]{1,6}", fields[0]):
            continue
        names.update(n for n in fields[1].split(",") if n)
        if match := re.search(r"\(codec (\S+?)\)", line):
            names.add(match.group(1))
    return names


def missing_capabilities(have: dict[str, set[str]], needs: dict[str, tuple[str, ...]]) -> list[str]:
    """``kind name`` for every need (``a|b``: either will do) that ``have`` lacks."""
    missing = []
    for kind, wanted in needs.items():
        for alternatives in wanted:
            if not set(alternatives.split("|")) & have.get(kind, set()):
                missing.append(f"{kind[:-1]} {alternatives.split('|')[0]}")
    return missing


# -- permission bits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AsteriskUser:
    """Whom the permission bits are judged for: a uid and its groups, or "other" (uid None)."""

    uid: int | None
    gids: frozenset[int] = frozenset()
    label: str = "any user"


def allowed_bits(st: os.stat_result, who: AsteriskUser) -> int:
    """The bits (4 read, 2 write, 1 search/execute) that apply to ``who``: owner's, group's or
    other's — as the kernel picks them, without root's exemption."""
    if who.uid is not None and st.st_uid == who.uid:
        return (st.st_mode >> 6) & 7
    if st.st_gid in who.gids:
        return (st.st_mode >> 3) & 7
    return st.st_mode & 7


def lacking(st: os.stat_result, who: AsteriskUser, need: int) -> list[str]:
    """What of ``need`` (bits as in :func:`allowed_bits`) ``who`` may not do: ``read``, ``write``,
    ``search`` (a directory) or ``execute``; empty when nothing is lacking."""
    bits = need & ~allowed_bits(st, who)
    return [
        n for n, b in (("read", 4), ("write", 2), ("search" if stat.S_ISDIR(st.st_mode) else "execute", 1)) if bits & b
    ]


# -- Asterisk ------------------------------------------------------------------------------------

#: module -> (when it is needed, what for); "fail" modules are needed in every deployment.
MODULES: tuple[tuple[str, str, str], ...] = (
    ("res_musiconhold.so", "always", "music on hold itself"),
    ("format_sln.so", "always", "plays the .sln and .sln16 renditions"),
    ("format_pcm.so", "always", "plays the .ulaw, .alaw and .g722 renditions"),
    ("func_channel.so", "always", "CHANNEL(musicclass), set by the AGI route and the ARI handler"),
    ("res_config_sqlite3.so", "realtime", "reads the realtime classes"),
    ("res_stasis.so", "always", "ARI applications: `serve ari` and doctor's probes"),
    ("res_ari_channels.so", "always", "ARI channel calls: `serve ari` and doctor's probes"),
    ("res_ari_events.so", "always", "the ARI events WebSocket"),
    ("res_http_websocket.so", "always", "the ARI events WebSocket"),
    ("res_ari_bridges.so", "advised", "`serve ari` reads bridges"),
    ("res_ari_applications.so", "advised", "`serve ari` subscribes to every channel and bridge"),
    ("res_agi.so", "advised", "the AGI route (`serve agi`, ooma-moh-agi)"),
    ("func_realtime.so", "realtime-advised", "doctor's realtime check"),
)
CALL_MODULES = ("chan_rtp.so", "res_rtp_asterisk.so")


def check_modules(settings: Settings, running: set[str]) -> Finding:
    """The modules ooma-moh needs are running."""
    realtime = settings.publish_mode == "realtime"
    required: list[str] = []
    advised: list[str] = []
    for name, when, why in MODULES:
        if name in running or (when.startswith("realtime") and not realtime):
            continue
        (required if when in ("always", "realtime") else advised).append(f"{name} ({why})")
    if required:
        return Finding(
            "modules",
            FAIL,
            f"Asterisk is not running {', '.join(required)}",
            "load them (`module load NAME`) and make sure modules.conf does not `noload` them",
        )
    if advised:
        return Finding(
            "modules",
            WARN,
            f"Asterisk is not running {', '.join(advised)}",
            "load them (`module load NAME`) if you use what they are for",
        )
    wanted = [n for n, when, _ in MODULES if realtime or not when.startswith("realtime")]
    return Finding(
        "modules",
        OK,
        f"{len(wanted)} modules ooma-moh uses are running (res_musiconhold.so,"
        f"{' res_config_sqlite3.so,' if realtime else ''} format_sln.so, ARI...)",
    )


def ari_failure(settings: Settings, exc: OomaMohError) -> Finding:
    """What a failed first ARI request means."""
    url = settings.ari_url
    if isinstance(exc, AriRequestFailed) and exc.status == 401:
        empty = " (OOMA_MOH_ARI_PASSWORD is empty)" if not settings.ari_password else ""
        return Finding(
            "ari",
            FAIL,
            f"ARI at {url} refused user {settings.ari_user!r}: ARI password wrong{empty} (401 Unauthorized)",
            f"set OOMA_MOH_ARI_PASSWORD (and OOMA_MOH_ARI_USER) to the password of the"
            f" [{settings.ari_user}] user in ari.conf, or fix ari.conf and `module reload res_ari.so`",
        )
    if isinstance(exc, AriRequestFailed) and exc.status == 404:
        return Finding(
            "ari",
            FAIL,
            f"Asterisk's HTTP server at {url} answers, but not ARI (404)",
            "load res_ari.so and res_ari_asterisk.so, set enabled=yes in ari.conf's [general]",
        )
    if isinstance(exc, AriRequestFailed):
        return Finding(
            "ari",
            FAIL,
            f"ARI at {url} answered {exc.status}: {one_line(str(exc), 200)}",
            "look at Asterisk's log for the reason",
        )
    return Finding(
        "ari",
        FAIL,
        f"Asterisk not reachable over ARI: {one_line(str(exc), 200)}",
        "start Asterisk, or check http.conf (enabled=yes, bindaddr and bindport matching"
        " OOMA_MOH_ARI_URL; `asterisk -rx 'http show status'`)",
    )


# -- the probe call's audio ----------------------------------------------------------------------


def s16le(samples: array.array[int]) -> bytes:
    """16-bit samples (native order) as little-endian bytes, as ``.sln16`` files and WAVs hold them;
    ``samples`` is left as it is."""
    if sys.byteorder == "little":
        return samples.tobytes()
    copy = array.array("h", samples)
    copy.byteswap()
    return copy.tobytes()


def probe_audio(seconds: float = 4.0, rate: int = PROBE_RATE) -> bytes:
    """The probe class's audio as s16le: a sweep from 400 to 1600 Hz, unlike any music."""
    frames = int(seconds * rate)
    out = array.array("h")
    phase = 0.0
    for i in range(frames):
        freq = 400.0 + 1200.0 * i / frames
        phase += 2 * math.pi * freq / rate
        out.append(int(7000 * math.sin(phase)))
    return s16le(out)


def heard_verdict(received_be: bytes, reference_le: bytes, rate: int = PROBE_RATE) -> tuple[str, str]:
    """Compare what an external media channel received (big-endian s16 from RTP) with a class's
    ``.sln16`` file: ``("match", ...)`` when every loud 100 ms window of it occurs, sample for
    sample, in the file; else ``("silence", ...)`` or ``("other", ...)``."""
    pcm = array.array("h")
    pcm.frombytes(received_be[: len(received_be) // 2 * 2])
    if sys.byteorder == "little":
        pcm.byteswap()
    window = rate // 10
    loud = []
    for start in range(window, len(pcm) - window + 1, window):  # the first 100 ms may be setup
        chunk = pcm[start : start + window]
        if math.sqrt(sum(x * x for x in chunk) / window) > 100:
            loud.append(s16le(chunk))
    seconds = len(pcm) / rate
    if len(loud) < 3:
        return "silence", f"{seconds:.1f} s of audio received, {len(loud)} loud 100 ms windows"
    looped = reference_le + reference_le[: window * 2]
    found = sum(1 for chunk in loud if _find_aligned(looped, chunk))
    if found == len(loud):
        return "match", f"{len(loud)} windows of 100 ms received, each found sample for sample in the class's file"
    return "other", (
        f"{found} of {len(loud)} loud windows of 100 ms found in the class's file: Asterisk played something else"
    )


def _find_aligned(haystack: bytes, needle: bytes) -> bool:
    start = haystack.find(needle)
    while start != -1:
        if start % 2 == 0:
            return True
        start = haystack.find(needle, start + 1)
    return False
