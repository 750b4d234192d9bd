"""What an upload sounds like, and how its renditions are cut to loop: pure rules, no process run
(the runs are :class:`ooma_moh.media.FfmpegConverter`'s).

The analysis costs no second decode: its branches are added to the decode run's filter graph
(:func:`decode_graph`), and their summaries are read from that run's log:

1. on the input as decoded — native rate, every channel, before any resampling or downmix: for
   the containers that may hold lossless audio (``LOSSLESS_CONTAINERS``), ``astats@native``: per
   channel the peak level, peak count and flat factor (clipping), overall the samples per channel
   and the mean power of the channels; for the lossy ones, ``volumedetect@native``: the mean power
   only (a fifth of astats' cost; see ``clipped_ratio`` for why nothing is lost);
2. on the 16 kHz mono PCM the renditions are made from — ffmpeg's own downmix, to float (measured
   on ffmpeg 5.1: it sums stereo as (L + R) * 0.7071, so identical channels keep the sum of their
   powers; to an integer format it would normalise the sum to (L + R) / 2), then resampled, in
   frames of ``FRAME_SAMPLES``: ``ebur128`` (loudness, true peak; already there),
   ``volumedetect@mono`` (the power of the mix callers hear), ``astats@dc`` on that PCM
   resampled to ``DC_RATE`` (the DC offset: the resampler's low-pass keeps the mean, to within
   5e-5 measured, under the 4 decimals reported), ``silencedetect`` (runs of at least ``SILENCE_MIN_S`` below
   ``silence_threshold_db``) and ``volumedetect@band`` behind a 300 Hz high-pass and a 3,400 Hz
   low-pass (4th-order Butterworth each): the phone band's power.

``volumedetect`` counts 16-bit samples (the PCM, converted in its own branch: the renditions'
own precision; float peaks over full scale are clipped there) and prints its mean in 0.1 dB
steps; ``astats`` costs about 170 instructions a sample where ``volumedetect`` costs under 10
(astats computes some twenty statistics, a sliding noise-floor histogram among them, whatever it
is asked to print), so astats measures only what needs it: the clipping at the native rate of
lossless inputs, and the offset at 1 kHz (docs/benchmarks.md, "Ingest").

Definitions (docs/configuration.md, "Analysis warnings", has the thresholds):

- ``clipped_ratio``: samples at full scale in runs, over all samples of all channels. A channel
  counts its peak count (samples equal to its minimum or maximum) when its peak level is within
  ``FULL_SCALE_DB`` of full scale *and* its flat factor is above 0 dB (its extremes come in runs of
  two samples or more); a channel that merely touches full scale at single samples counts 0.
  Lossy codecs round clipped tops off below full scale (measured: a tone clipped by 18 dB into a
  16-bit WAV has 101,880 full-scale samples per channel in 3 s, its 128 kbit/s MP3 has 37), so
  MP3, OGG and AAC are not measured and report 0.0: the clipping of a lossy upload is not seen.
- ``mono_loss_db``: 10·log10(sum of the channels' powers / power of ffmpeg's downmix), i.e. for
  stereo 10·log10(mean channel power / power of (L + R) / 2); 0.0 for mono, floored at 0.0 and
  capped at ``MONO_LOSS_CAP_DB``. The channels are measured at the native rate, the downmix at
  16 kHz (measuring the native downmix as well cost ~0.15 s more per 5 min of 48 kHz stereo):
  energy above 8 kHz counts as lost, tenths of a dB for music, a few dB for hiss-like material.
  Within 0.1 dB (the downmix's power in 0.1 dB steps; the lossy inputs' channels too).
- ``phone_band_ratio``: band power / power of the 16 kHz mono PCM (energy above 8 kHz, which no
  rendition carries, is not counted); both in 0.1 dB steps, so within ±2.3 % of itself (0.50 ±
  0.012).
- ``dc_offset``: the mean of the 16 kHz mono PCM (measured at 1 kHz, above) — the offset the
  renditions would carry, and what the encode run subtracts when it is at least
  ``DC_REMOVAL_MIN`` (below, -60 dBFS, it is inaudible, and the subtraction costs a pass of
  ``aeval``: 0.15 s per 5 minutes).
- ``mostly_silence``: the silences found by ``silencedetect`` add up to ``MOSTLY_SILENCE`` or
  more of the decoded audio (silence is judged with the DC offset still in).

The loop (:func:`plan_loop`): leading and trailing silence are trimmed (``trim_silence``), except
up to ``loop_crossfade_ms`` of the leading silence, so that the crossfade fades in silence rather
than a first word; nothing is trimmed when nothing is above the threshold. Then, over
X = min(``loop_crossfade_ms``, length / 4), the renditions are audio[X:N-X] followed by
audio[N-X:N] fading out mixed with audio[0:X] fading in: the file's end flows into its start.
The curves are linear: a linear crossfade never makes a sample larger than the larger of the two
it mixes, so the true-peak ceiling the limiter planned for still holds, and the same material at
both ends (a tone, a held chord) passes through at constant level; uncorrelated material dips at
most 3 dB at the middle of the fade. ``loop_seam`` is ``crossfaded`` when X > 0, ``clean`` when
``loop_crossfade_ms`` is 0 or the audio is too short for a crossfade of one sample.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import MediaToolError

PCM_RATE = 16000

#: containers that may hold lossless audio (M4A: ALAC): the only ones whose clipping is measured
LOSSLESS_CONTAINERS = ("wav", "flac", "m4a")
#: a peak level at least this high (dBFS) is full scale (16-bit full scale is -0.0003 dBFS)
FULL_SCALE_DB = -0.01
#: ``clipping`` from this share of samples at full scale in runs
CLIPPED_RATIO_LIMIT = 0.001
#: ``dc_offset`` from this mean (full scale = 1)
DC_OFFSET_LIMIT = 0.01
#: the renditions have the mean subtracted from this size on
DC_REMOVAL_MIN = 0.001
#: ``mono_cancellation`` from this loss (dB) when the channels are summed to mono
MONO_LOSS_LIMIT_DB = 6.0
MONO_LOSS_CAP_DB = 60.0
#: ``outside_phone_band`` under this share of the energy in 300-3,400 Hz
PHONE_BAND_MIN = 0.5
PHONE_BAND_HZ = (300, 3400)
#: ``mostly_silence`` from this share of the decoded audio in silences
MOSTLY_SILENCE = 0.5
#: the shortest run below the threshold that is a silence (shorter dips are part of the sound)
SILENCE_MIN_S = 0.05
#: ``too_short`` under this length of the renditions (ms): callers hear it repeat
TOO_SHORT_MS = 15000
#: a silence ending this close to the end of the audio (s) reaches it (silencedetect prints
#: 6 significant digits: 10 ms at half an hour)
EDGE_SLACK_S = 0.02

WARNINGS = ("clipping", "dc_offset", "mono_cancellation", "outside_phone_band", "mostly_silence", "too_short")

#: the decode run's PCM frames (samples): ffmpeg's per-frame work in the graph, paid by every
#: branch, falls by a quarter from the decoder's ~384 samples at 16 kHz; the PCM is the same
FRAME_SAMPLES = 4096
#: the rate the DC offset is measured at (the mean survives the resampler's low-pass)
DC_RATE = 1000
#: to 16 bits for ``volumedetect``, its own branch's copy (``aresample`` has formats of its own)
TO_S16 = "aresample,aformat=sample_fmts=s16"

_LABELLED_RE = re.compile(r"^\[astats@(\w+) @ [^\]]*\] (?:\[info\] )?(.*?)\s*$", re.M)
_MEAN_VOLUME_RE = re.compile(r"^\[volumedetect@(\w+) @ [^\]]*\] (?:\[info\] )?mean_volume: (-?[\d.]+|-?inf) dB", re.M)
_SILENCE_RE = re.compile(r"silence_(start|end): (-?[\d.e+-]+|-?inf)")


def butterworth4(kind: str, hz: int) -> str:
    """A 4th-order Butterworth ``highpass``/``lowpass``: two 2nd-order sections (Q 0.5412, 1.3066)."""
    return ",".join(f"{kind}=f={hz}:width_type=q:width={q}" for q in (0.5412, 1.3066))


def decode_graph(to_pcm: str, threshold_db: float, *, analyse: bool, find_silence: bool, clipping: bool) -> str:
    """The decode run's graph: ``to_pcm`` (input to 16 kHz mono) into ``[pcm]`` in frames of
    ``FRAME_SAMPLES``, ``ebur128`` on it, and the analysis branches (module docstring) and/or
    ``silencedetect`` when asked. ``to_pcm`` must start with a filter of its own formats
    (``aresample``), or the native branch's layout would be negotiated to the PCM's mono."""
    mono = ["[e]ebur128=peak=true,anullsink"]
    if analyse:
        low, high = PHONE_BAND_HZ
        mono += [
            f"[m]{TO_S16},volumedetect@mono,anullsink",
            f"[d]aresample={DC_RATE}:filter_size=8,"
            "astats@dc=measure_perchannel=none:measure_overall=DC_offset:threads=1,anullsink",
            f"[b]{butterworth4('highpass', low)},{butterworth4('lowpass', high)},{TO_S16},volumedetect@band,anullsink",
        ]
    if analyse or find_silence:
        mono.append(
            f"[s]asetpts=PTS-STARTPTS,silencedetect=noise={threshold_db:.1f}dB:duration={SILENCE_MIN_S},anullsink"
        )
    labels = "".join(part[:3] for part in mono)
    split = f"{to_pcm},asetnsamples=n={FRAME_SAMPLES}:p=0,asplit={len(mono) + 1}[pcm]{labels};" + ";".join(mono)
    if not analyse:
        return f"[0:a:0]{split}"
    native = (
        "astats@native=measure_perchannel=Peak_level+Flat_factor+Peak_count"
        ":measure_overall=RMS_level+Number_of_samples:threads=1"
        if clipping
        else "aresample,volumedetect@native"  # aresample: its s16 stays in this branch
    )
    return f"[0:a:0]asplit=2[n][r];[n]{native},anullsink;[r]{split}"


def labelled_sections(log: str, label: str) -> list[dict[str, float]]:
    """The last summary a labelled ``astats`` printed: one dict per channel, then the overall one."""
    sections: list[dict[str, float]] = []
    complete = False  # the overall section has begun: whatever section comes next starts anew
    for name, text in _LABELLED_RE.findall(log):
        if name != label:
            continue
        if text.startswith("Channel:") or text == "Overall":
            if complete:
                sections = []  # a new summary (ffmpeg may configure a graph twice)
            sections.append({})
            complete = text == "Overall"
            continue
        key, sep, value = text.partition(": ")
        if sep and sections:
            try:
                sections[-1][key] = float(value.split()[0])
            except (ValueError, IndexError):
                continue
    if not sections:
        raise MediaToolError(f"ffmpeg printed no {label} summary")
    return sections


def clipped_ratio(channels: list[dict[str, float]], samples_per_channel: float) -> float:
    """Share of samples at full scale in runs (module docstring), from ``astats`` per channel."""
    clipped, total = 0.0, samples_per_channel * len(channels)
    for ch in channels:
        if ch.get("Peak level dB", -math.inf) >= FULL_SCALE_DB and ch.get("Flat factor", 0.0) > 0.0:
            clipped += ch.get("Peak count", 0.0)
    return clipped / total if total else 0.0


def silences(log: str) -> list[tuple[float, float]]:
    """(start, end) in seconds of each silence ``silencedetect`` reported, in order."""
    found: list[tuple[float, float]] = []
    start: float | None = None
    for kind, value in _SILENCE_RE.findall(log):
        if kind == "start":
            start = max(0.0, float(value))
        elif start is not None:
            found.append((start, float(value)))
            start = None
    return found


@dataclass(frozen=True)
class Measures:
    """What the decode run's analysis branches found (module docstring)."""

    channels: int
    clipped_ratio: float
    channel_power_db: float  # mean over channels, native rate
    dc_offset: float
    mono_power_db: float
    band_power_db: float
    silences: tuple[tuple[float, float], ...]

    @property
    def mono_loss_db(self) -> float:
        if self.channels <= 1:
            return 0.0
        if self.mono_power_db == -math.inf:
            return MONO_LOSS_CAP_DB
        loss = self.channel_power_db + 10 * math.log10(self.channels) - self.mono_power_db
        return min(MONO_LOSS_CAP_DB, max(0.0, loss))

    @property
    def phone_band_ratio(self) -> float:
        if self.mono_power_db == -math.inf:
            return 0.0
        return min(1.0, max(0.0, 10 ** ((self.band_power_db - self.mono_power_db) / 10)))


def mean_volume(log: str, label: str) -> float:
    """The last mean power (dBFS, 0.1 dB steps) a labelled ``volumedetect`` printed."""
    found = [value for name, value in _MEAN_VOLUME_RE.findall(log) if name == label]
    if not found:
        raise MediaToolError(f"ffmpeg printed no {label} volumedetect summary")
    return float(found[-1])


def parse_measures(log: str, channels: int, clipping: bool) -> Measures:
    """The analysis branches' summaries in a decode run's log (``channels``: the input's)."""
    if clipping:
        native = labelled_sections(log, "native")
        per_channel, overall = native[:-1], native[-1]
        ratio = clipped_ratio(per_channel, overall.get("Number of samples", 0.0))
        power = overall.get("RMS level dB", -math.inf)
    else:
        ratio, power = 0.0, mean_volume(log, "native")
    return Measures(
        channels=channels,
        clipped_ratio=ratio,
        channel_power_db=power,
        dc_offset=labelled_sections(log, "dc")[-1].get("DC offset", 0.0),
        mono_power_db=mean_volume(log, "mono"),
        band_power_db=mean_volume(log, "band"),
        silences=tuple(silences(log)),
    )


@dataclass(frozen=True)
class LoopPlan:
    """Which samples of the 16 kHz PCM the renditions keep, and the crossfade of their end into
    their start (module docstring). ``start``/``end`` bound the kept samples; ``crossfade`` is X."""

    total: int
    start: int
    end: int
    crossfade: int

    @property
    def samples(self) -> int:
        """Samples (16 kHz) of the renditions."""
        return self.end - self.start - self.crossfade

    @property
    def duration_ms(self) -> int:
        return self.samples * 1000 // PCM_RATE

    def trimmed_ms(self) -> dict[str, int]:
        return {"start": self.start * 1000 // PCM_RATE, "end": (self.total - self.end) * 1000 // PCM_RATE}

    def graph(self, shaping: str) -> str:
        """Filters from ``[0:a]`` to ``[looped]``: trim, ``shaping`` (DC, gain, limiter), crossfade."""
        chain = "[0:a]"
        if (self.start, self.end) != (0, self.total):
            chain += f"atrim=start_sample={self.start}:end_sample={self.end},asetpts=PTS-STARTPTS,"
        chain += shaping
        x = self.crossfade
        if not x:
            return chain + "[looped]"
        return (
            f"{chain},asplit=2[body][head];[head]atrim=end_sample={x}[h];"
            f"[body]atrim=start_sample={x},asetpts=PTS-STARTPTS[b];"
            f"[b][h]acrossfade=ns={x}:c1=tri:c2=tri[looped]"
        )


def silent_edges(total: int, found: tuple[tuple[float, float], ...] | list[tuple[float, float]]) -> tuple[int, int]:
    """Samples of leading and of trailing silence in ``total`` samples."""
    lead = trail = 0
    slack = EDGE_SLACK_S * PCM_RATE
    for start, end in found:
        first, last = round(start * PCM_RATE), min(total, round(end * PCM_RATE))
        if first <= 1:
            lead = max(lead, last)
        if last >= total - slack:
            trail = max(trail, total - first)
    return min(lead, total), min(trail, total)


def plan_loop(
    total: int, found: tuple[tuple[float, float], ...] | list[tuple[float, float]], trim: bool, crossfade_ms: int
) -> LoopPlan:
    """The cut of ``total`` decoded samples into a loop (module docstring)."""
    fade = crossfade_ms * PCM_RATE // 1000
    start, end = 0, total
    lead, trail = silent_edges(total, found)
    if trim and lead + trail < total:
        start = lead - min(lead, fade)
        end = total - trail
    return LoopPlan(total, start, end, min(fade, (end - start) // 4))


def dc_to_remove(measures: Measures | None) -> float:
    """The offset the encode run subtracts (0.0: none; module docstring)."""
    return measures.dc_offset if measures and abs(measures.dc_offset) >= DC_REMOVAL_MIN else 0.0


def warnings_for(measures: Measures, decoded_samples: int, loop: LoopPlan) -> list[str]:
    """The warning codes, in the order of :data:`WARNINGS`."""
    silent = sum(max(0.0, min(end, decoded_samples / PCM_RATE) - start) for start, end in measures.silences)
    found = {
        "clipping": measures.clipped_ratio >= CLIPPED_RATIO_LIMIT,
        "dc_offset": abs(measures.dc_offset) >= DC_OFFSET_LIMIT,
        "mono_cancellation": measures.mono_loss_db >= MONO_LOSS_LIMIT_DB,
        "outside_phone_band": measures.phone_band_ratio < PHONE_BAND_MIN,
        "mostly_silence": decoded_samples > 0 and silent / (decoded_samples / PCM_RATE) >= MOSTLY_SILENCE,
        "too_short": loop.duration_ms < TOO_SHORT_MS,
    }
    return [code for code in WARNINGS if found[code]]


def analysis_dict(
    measures: Measures,
    loudness_in: tuple[float, float],
    lufs_out: float,
    decoded_samples: int,
    loop: LoopPlan,
) -> dict[str, Any]:
    """``Conversion.analysis``: JSON-ready, keys documented in docs/configuration.md."""
    lufs_in, peak_in = loudness_in
    return {
        "loudness_lufs_in": round(lufs_in, 1),
        "loudness_lufs_out": round(lufs_out, 1),
        "true_peak_dbtp_in": round(peak_in, 1),
        "clipped_ratio": round(measures.clipped_ratio, 4),
        "dc_offset": round(measures.dc_offset, 4),
        "silence_trimmed_ms": loop.trimmed_ms(),
        "mono_loss_db": round(measures.mono_loss_db, 1),
        "phone_band_ratio": round(measures.phone_band_ratio, 2),
        "duration_ms": loop.duration_ms,
        "loop_seam": "crossfaded" if loop.crossfade else "clean",
        "warnings": warnings_for(measures, decoded_samples, loop),
    }
