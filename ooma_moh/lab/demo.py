"""The main job on the embedded default, end to end against a real Asterisk.

Starts the lab Asterisk (provisioning it on first use), generates a sample upload, ingests it for
tenant ``demo``, syncs it into a realtime class, then places a Local channel on that class and
records what it hears: the demo passes only if the recording is the sample's tone.
"""

from __future__ import annotations

import shutil
import tempfile
import wave
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from ..app import build_service, build_syncer
from ..config import Settings
from ..media import synth_sample
from ..model import DEFAULT_CLASS
from .asterisk import LabAsterisk
from .config import DEFAULT_TONE
from .tones import classify_windows

DEMO_TENANT = "demo"
DEMO_TONE = 440.0


def heard(wav_path: Path) -> Counter[float | None]:
    """How many 100 ms windows of a recording carry the demo tone, the default tone, or silence."""
    with wave.open(str(wav_path)) as wav:
        pcm, rate = wav.readframes(wav.getnframes()), wav.getframerate()
    return Counter(classify_windows(pcm, rate, (DEMO_TONE, DEFAULT_TONE))[1:])


def run_demo(say: Callable[[str], None], keep: Path | None = None) -> bool:
    """Run the demo; True if callers heard the right music. ``keep``: directory to keep."""
    shared = keep or Path(tempfile.mkdtemp(prefix="ooma-moh-demo-"))
    say(f"lab: starting Asterisk 22 in a chroot (provisioned on first use); files in {shared}")
    with LabAsterisk(shared) as lab:
        say(f"lab: {lab.cli('core show version').strip()}; ARI on {lab.ari_url}")
        settings = Settings(**lab.settings_overrides(), publish_mode="realtime")
        service = build_service(settings)
        sample = synth_sample(settings, shared / "sample.mp3", DEMO_TONE, 8.0)
        say(f"upload: generated {sample.name} ({sample.stat().st_size:,} bytes, {DEMO_TONE:g} Hz tone)")
        tenant = service.upload(DEMO_TENANT, sample, accept_disclaimer=True, accepted_by="demo")
        moh_class = tenant.moh_class(settings.class_prefix)
        say(
            f"upload: tenant {DEMO_TENANT} -> class {moh_class}, renditions "
            + ", ".join(f".{r.extension} ({r.size:,} B)" for r in tenant.renditions)
        )
        report = build_syncer(settings, service).run(None)
        say(
            f"sync: {report.counts['added']} class added, {report.files_written} files written,"
            f" realtime row in {settings.realtime_db}, no reload"
        )
        ok = True
        cases = ((DEMO_TENANT, moh_class, DEMO_TONE), ("a tenant on default music", DEFAULT_CLASS, DEFAULT_TONE))
        for who, klass, expected in cases:
            counts = heard(lab.record(f"demo_{klass.replace('-', '_')}", 3, klass))
            total = sum(counts.values())
            right = counts[expected]
            say(
                f"listen: a caller of {who} (class {klass}) heard the {expected:g} Hz tone in {right} of {total}"
                " windows of 100 ms"
            )
            ok = ok and total > 0 and right >= 0.95 * total
        service.catalog.close()
    if keep is None:
        shutil.rmtree(shared, ignore_errors=True)
    say("demo passed: callers hear their tenant's music" if ok else "demo FAILED")
    return ok
