"""The main job on the embedded default: ingest a generated sample and prove what callers hear."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

from .config import Settings
from .media import synth_sample
from .service import MohService
from .tones import classify_windows

DEMO_TENANT = "demo"
DEMO_TONE = 440.0
OTHER_TONES = (330.0, 523.0, 880.0)


def run_ingest_demo(settings: Settings, service: MohService, say: Callable[[str], None]) -> Path:
    """Generate a sample, upload it for the demo tenant, and check its rendition's tone."""
    work = settings.home / "demo"
    work.mkdir(parents=True, exist_ok=True)
    sample = synth_sample(settings, work / "sample.mp3", DEMO_TONE, 8.0)
    say(f"generated {sample} ({sample.stat().st_size:,} bytes, {DEMO_TONE:g} Hz tone, 8 s)")
    tenant = service.upload(DEMO_TENANT, sample, accept_disclaimer=True, accepted_by="demo")
    say(f"uploaded for tenant {DEMO_TENANT}: class {tenant.moh_class(settings.class_prefix)}, "
        f"{len(tenant.renditions)} renditions: " + ", ".join(f".{r.extension}" for r in tenant.renditions))
    heard = classify_windows(service.rendition_bytes(DEMO_TENANT, "sln16"), 16000, (DEMO_TONE, *OTHER_TONES))
    counts = Counter(heard)
    say(f"the .sln16 rendition: {counts[DEMO_TONE]} of {len(heard)} windows of 100 ms are the {DEMO_TONE:g} Hz tone")
    if counts[DEMO_TONE] < 0.95 * len(heard):
        raise SystemExit("demo failed: the rendition does not carry the sample's tone")
    return sample
