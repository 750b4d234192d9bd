"""Doctor's ``--call`` probe: Asterisk plays a class to doctor's probe channel and the audio
received is compared, sample for sample, with that class's ``.sln16`` file.

Realtime mode plays a probe class doctor publishes for the test (a frequency sweep in
``<moh_dir>/.doctor-<pid>``, removed afterwards); static mode plays the first published tenant
class (a new class would need a reload). Asterisk plays ``default`` for a class it cannot find,
so anything but the class's own samples fails."""

from __future__ import annotations

import array
import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from ..config import Settings
from ..publish import StaticPublisher
from .channel import ProbeChannel
from .findings import FAIL, OK, WARN, Finding, heard_verdict, how_to_publish, probe_audio


def probe_path(settings: Settings) -> Path:
    """Where the probe class's files are: ``<moh_dir>/.doctor-<pid>``."""
    return settings.moh_dir / f".doctor-{os.getpid()}"


@contextlib.contextmanager
def probe_directory(settings: Settings) -> Iterator[tuple[Path, bytes]]:
    """:func:`probe_path` with the probe audio as ``moh.sln16`` and ``moh.sln`` (0755 and 0644,
    as sync makes them); a dot-name, so sync's clean-up leaves it alone. Removed afterwards, and
    so are the MOH directory and its parents if doctor made them (unless a sync filled one
    meanwhile)."""
    directory = probe_path(settings)
    audio = probe_audio()
    narrow = array.array("h")
    narrow.frombytes(audio)
    made = [p for p in (settings.moh_dir, *settings.moh_dir.parents) if not p.exists()]  # deepest first
    try:
        settings.moh_dir.mkdir(parents=True, exist_ok=True)
        directory.mkdir(exist_ok=True)
        os.chmod(directory, 0o755)
        for name, data in (("moh.sln16", audio), ("moh.sln", narrow[::2].tobytes())):
            (directory / name).write_bytes(data)
            os.chmod(directory / name, 0o644)
        yield directory, audio
    finally:
        shutil.rmtree(directory, ignore_errors=True)
        for path in made:
            with contextlib.suppress(OSError):  # not empty: a sync published into it meanwhile
                path.rmdir()


async def check_static_call(channel: ProbeChannel, settings: Settings) -> Finding:
    """Static mode: the first published tenant class, played to ``channel``."""
    published = StaticPublisher(settings.classes_conf, settings.class_prefix).current()
    if not published:
        return Finding(
            "call",
            WARN,
            f"not checked: no class is published in {settings.classes_conf} yet (static"
            " mode plays a published class; a probe class would need a reload)",
            f"{how_to_publish(settings)} after the first upload, then run `ooma-moh doctor --call`",
        )
    moh_class, directory = sorted(published.items())[0]
    try:
        reference = (Path(directory) / "moh.sln16").read_bytes()
    except OSError as exc:
        return Finding(
            "call",
            FAIL,
            f"{directory}/moh.sln16 of class {moh_class} cannot be read: {exc.strerror}",
            f"{how_to_publish(settings)}, then run `ooma-moh verify`",
        )
    return await check_call(channel, settings, moh_class, reference, "the first published tenant class")


async def check_call(channel: ProbeChannel, settings: Settings, moh_class: str, reference: bytes, what: str) -> Finding:
    """Class ``moh_class`` (``what``, for the reader), played to ``channel``, sounds like
    ``reference``, its ``.sln16`` file."""
    received = await channel.listen(moh_class)
    verdict, detail = heard_verdict(received, reference)
    if verdict == "match":
        return Finding("call", OK, f"Asterisk plays {what} ({moh_class}) to a channel: {detail}")
    if verdict == "silence":
        return Finding(
            "call",
            FAIL,
            f"a channel playing {what} ({moh_class}) heard silence: {detail}",
            "check that Asterisk can read the class's files (moh-dir above) and Asterisk's log for"
            " res_musiconhold warnings; callers may hear silence",
        )
    return Finding(
        "call",
        FAIL,
        f"a channel playing {what} ({moh_class}) heard other music: {detail}, i.e. the class falls back to default",
        f"fix the findings above (realtime mapping, moh-dir); static mode: {how_to_publish(settings)} and"
        " check that musiconhold.conf #includes OOMA_MOH_CLASSES_CONF; then run `ooma-moh verify`",
    )
