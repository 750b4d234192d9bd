"""A recorded voice over music (issue 26): the voice on top, a bed of music looping under it,
lowered while the voice speaks. Trusted 16 kHz mono f32le PCM in (the upload was decoded by the
restricted converter, the bed read by the caller), the same PCM out, in two ffmpeg runs.

The rules, in order:

1. **Lengths.** The bed files play one after the other in the order given (the caller sorts them
   as Asterisk plays a class directory: by name) and the sequence loops for as long as needed;
   empty files are skipped, and a bed with no sample at all is ``BedUnavailable``, an empty voice
   ``MediaToolError``. The output lasts :data:`INTRO_MS` + the voice + :data:`OUTRO_MS`: the bed
   alone (fading in over its first :data:`FADE_IN_MS`), the voice over the bed, the bed alone
   again (the last :data:`FADE_OUT_MS` fading out to silence). A bed shorter than that is looped
   by ``aloop``, which holds one pass of it in memory (4 bytes a sample: 115 MB for 30 minutes).
2. **Loudness** (first run): the EBU R128 integrated loudness (``ebur128``) of the voice and of the
   bed as it will be played (the looped sequence cut to the output's length, before its fades),
   both in one run. Integrated loudness leaves out the blocks more than 10 LU under the rest, so
   the voice's is its level *while it speaks*; an RMS over the file would count the pauses and set
   the bed too low by their share. A voice or bed at or under :data:`SILENCE_LUFS` (silent, or
   too short to measure) is refused (``MediaToolError``, ``BedUnavailable``).
3. **The bed's level**: gain = voice LUFS + ``bed_level_db`` − bed LUFS, rounded to 0.01 dB, so in
   the voice's pauses the bed sits ``bed_level_db`` under the voice (−18 dB by default).
4. **Ducking**: while the voice speaks the bed is :data:`DUCK_DB` lower again (−30 dB under the
   voice by default), exactly: the bed is split, one copy goes through ``sidechaingate`` keyed by
   the voice — gain exactly 1 while the voice's RMS detector is above the threshold
   (:data:`GATE_BELOW_DB` under the voice's loudness; ``knee=1``), falling at ``ratio``
   :data:`GATE_RATIO` towards ``range=0`` under it — is scaled by −(1 − 10^(−DUCK_DB/20)) and
   summed with the bed. So the bed is ×10^(−DUCK_DB/20) while the gate is open and untouched
   once it has closed. ``attack``/``release`` are :data:`ATTACK_MS`/:data:`RELEASE_MS` (ffmpeg
   smooths the detector's power with time constants of a quarter of each). Measured on ffmpeg 5.1
   with tone bursts: the bed is down within 5 ms of an abrupt onset (as fast as the voice rises:
   there is no look-ahead, and no ramp of its own), stays down through gaps under 0.25 s, and
   is back to within 0.1 dB 0.35 s after the voice stops.
5. **The side-chain never reads exact zero**: ffmpeg's gate leaves its gain at 1 (open) while its
   detector is exactly 0, which would duck the bed under the intro's digital silence; the voice
   feeding the detector gets :data:`SIDECHAIN_FLOOR` (−120 dBFS) added. What is heard is not.
6. **The mix** (second run): the voice delayed by the intro and padded to the output's length, the
   bed (gain, fades) and its gated copy summed by ``amix`` with ``normalize=0`` (the copy's minus
   sign comes from ``volume``: ffmpeg 5.1's ``amix`` drops the sign of a weight when it does not
   normalise), written as f32le. Failures are ``MediaToolError`` with the
   log's last error line (a full disk is ``StorageError``, as in :mod:`ooma_moh.media`); an output
   of the wrong length too. Every number in the graph is rounded before use: same inputs, same
   bytes (on one build of ffmpeg and one CPU family: its float code may use other SIMD elsewhere).

Two runs is the floor: a gain has to be measured before it is applied, and ffmpeg has no way to
hand one filter's measurement to another within a run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from . import ffmpeg
from .config import Settings
from .errors import BedUnavailable, MediaToolError, StorageError
from .media_rules import PCM_BYTES_PER_SAMPLE, PCM_RATE, SILENCE_LUFS, parse_ebur128

#: the bed alone before the voice, and the part of it fading in from silence (ms)
INTRO_MS = 2000
FADE_IN_MS = 1000
#: the bed alone after the voice, and the part of it (its end) fading out to silence (ms)
OUTRO_MS = 3000
FADE_OUT_MS = 2000
#: how much further the bed is lowered while the voice speaks (dB)
DUCK_DB = 12.0
#: the gate opens while the voice's short-term RMS is within this much of its loudness (dB)
GATE_BELOW_DB = 20.0
#: ffmpeg ``sidechaingate`` attack and release (ms) and ratio (see rule 4)
ATTACK_MS = 20
RELEASE_MS = 200
GATE_RATIO = 3.0
#: added to the side-chain so its detector never reads exact zero (rule 5): -120 dBFS
SIDECHAIN_FLOOR = 1e-6
#: the fades' shape (ffmpeg ``afade`` curve): a quarter sine
FADE_CURVE = "qsin"

_PCM_IN = ["-f", "f32le", "-ar", str(PCM_RATE), "-ac", "1"]
_PREFIX_RE = re.compile(r"^(\[[^\]]*\]\s*)+")
_PATH_RE = re.compile(r"(?:file:)?/\S*/([^/\s:]+)")


@dataclass(frozen=True)
class MixResult:
    """What a mix did: its length, the two measured loudnesses and the gains applied."""

    duration_ms: int
    voice_lufs: float
    bed_lufs: float
    #: applied to the bed so that in the voice's pauses it sits ``bed_level_db`` under the voice
    bed_gain_db: float
    duck_db: float
    intro_ms: int
    outro_ms: int


def ms_to_samples(ms: int) -> int:
    """Samples at :data:`PCM_RATE` in ``ms`` milliseconds."""
    return ms * PCM_RATE // 1000


@dataclass(frozen=True)
class MixPlan:
    """The lengths of one mix, in samples at :data:`PCM_RATE` (rule 1)."""

    voice: int
    #: the lengths of the bed files that are played (the non-empty ones), in play order
    beds: tuple[int, ...]

    @property
    def intro(self) -> int:
        return ms_to_samples(INTRO_MS)

    @property
    def outro(self) -> int:
        return ms_to_samples(OUTRO_MS)

    @property
    def total(self) -> int:
        """The output's length: intro, voice, outro."""
        return self.intro + self.voice + self.outro

    @property
    def cycle(self) -> int:
        """One pass of the bed files."""
        return sum(self.beds)

    @property
    def loops(self) -> bool:
        """Whether the bed has to repeat to last the output's length."""
        return self.cycle < self.total


def plan_mix(voice_samples: int, bed_samples: list[int]) -> MixPlan:
    """The plan for a voice and bed files of these lengths (rule 1); raises when there is nothing
    to mix."""
    if voice_samples <= 0:
        raise MediaToolError("the voice to put music under is empty")
    beds = tuple(n for n in bed_samples if n > 0)
    if not beds:
        raise BedUnavailable("the music to put under the voice holds no audio")
    return MixPlan(voice_samples, beds)


def bed_gain_db(voice_lufs: float, bed_lufs: float, bed_level_db: float) -> float:
    """The gain that puts the bed ``bed_level_db`` under the voice (rule 3), 0.01 dB steps."""
    return round(voice_lufs + bed_level_db - bed_lufs, 2) + 0.0  # + 0.0: no "-0.00"


def duck_weight(duck_db: float = DUCK_DB) -> float:
    """The weight of the gated copy of the bed: bed + weight × bed = bed × 10^(−duck_db/20)."""
    return round(-(1.0 - 10 ** (-duck_db / 20)), 6)


def gate_threshold(voice_lufs: float) -> float:
    """The gate's threshold (linear amplitude; ffmpeg squares it for its RMS detector):
    :data:`GATE_BELOW_DB` under the voice's loudness, at most full scale."""
    return float(f"{min(1.0, 10 ** ((voice_lufs - GATE_BELOW_DB) / 20)):.6g}")


def _bed_chain(plan: MixPlan) -> str:
    """The bed files in order, looped if needed and cut to the output's length (no label)."""
    labels = "".join(f"[{1 + i}:a]" for i in range(len(plan.beds)))
    filters = [f"concat=n={len(plan.beds)}:v=0:a=1"] if len(plan.beds) > 1 else []
    if plan.loops:
        filters.append(f"aloop=loop=-1:size={plan.cycle}")
    filters.append(f"atrim=end_sample={plan.total}")
    return labels + ",".join(filters)


def measure_graph(plan: MixPlan) -> str:
    """The first run's graph: the voice's and the bed's loudness (rule 2), by named ``ebur128``
    instances (:func:`parse_loudness`), their frame-by-frame lines left out of the log."""
    meter = "peak=sample:framelog=verbose"
    return f"[0:a]ebur128@voice={meter}[voice];{_bed_chain(plan)},ebur128@bed={meter}[bed]"


def mix_graph(plan: MixPlan, gain_db: float, threshold: float, duck_db: float = DUCK_DB) -> str:
    """The second run's graph (rules 4 to 6); its output is ``[mix]``."""
    fade_in, fade_out = ms_to_samples(FADE_IN_MS), ms_to_samples(FADE_OUT_MS)
    gate = (
        f"sidechaingate=threshold={threshold:.6g}:ratio={GATE_RATIO:g}:attack={ATTACK_MS}:release={RELEASE_MS}"
        ":knee=1:range=0:detection=rms"
    )
    return (
        f"[0:a]adelay=delays={plan.intro}S:all=1,apad=whole_len={plan.total},asplit=2[voice][key];"
        f"[key]aeval=val(0)+{SIDECHAIN_FLOOR:g}[sc];"
        f"{_bed_chain(plan)},volume={gain_db:.2f}dB:precision=double,"
        f"afade=t=in:ss=0:ns={fade_in}:curve={FADE_CURVE},"
        f"afade=t=out:ss={plan.total - fade_out}:ns={fade_out}:curve={FADE_CURVE},asplit=2[bed][tocut];"
        f"[tocut][sc]{gate},volume={duck_weight(duck_db)}:precision=double[cut];"
        "[voice][bed][cut]amix=inputs=3:normalize=0[mix]"
    )


def input_args(voice_pcm: Path, bed_pcms: list[Path]) -> list[str]:
    """ffmpeg's inputs: the voice (input 0), then each bed file, all raw PCM, read as files only."""
    args: list[str] = []
    for path in (voice_pcm, *bed_pcms):
        args += [*_PCM_IN, "-i", f"file:{path}"]
    return args


def parse_loudness(log: str) -> tuple[float, float]:
    """The voice's and the bed's integrated loudness from the first run's log (its two named
    ``ebur128`` summaries)."""
    found: dict[str, float] = {}
    parts = re.split(r"^\[ebur128@(voice|bed) @ [^\]]*\] (?:\[info\] )?Summary:", log, flags=re.M)
    for name, text in zip(parts[1::2], parts[2::2], strict=True):
        found[name] = parse_ebur128(text)[0]
    if set(found) != {"voice", "bed"}:
        raise MediaToolError("ffmpeg printed no loudness summary for the voice or the bed")
    return found["voice"], found["bed"]


def last_error(run: ffmpeg.Run) -> str:
    """The log's last error line (else its last line), without ffmpeg's prefixes or directories."""
    line = (run.errors() or run.log.strip().splitlines() or [f"exit {run.returncode}"])[-1]
    return _PATH_RE.sub(r"\1", _PREFIX_RE.sub("", line.strip()))[:200]


def run_tool(settings: Settings, args: list[str], doing: str) -> ffmpeg.Run:
    """One ffmpeg run under the settings' limits; any failure raised (rule 6)."""
    limits = ffmpeg.Limits(settings.ffmpeg_cpu_s, settings.ffmpeg_wall_s, settings.ffmpeg_memory_mb << 20)
    try:
        run = ffmpeg.run(settings.ffmpeg, args, limits)
    except ffmpeg.ToolMissing:
        raise MediaToolError(f"ffmpeg not found ({settings.ffmpeg}): install ffmpeg") from None
    if run.could_not_start:
        raise MediaToolError(f"ffmpeg cannot start within ffmpeg_memory_mb={settings.ffmpeg_memory_mb}")
    if (number := ffmpeg.storage_failure(run.log)) is not None:
        raise StorageError.from_errno(number, doing)
    if run.killed_by_limit:
        raise MediaToolError(f"ffmpeg ran out of its time or memory limits {doing}")
    if run.returncode != 0 or run.errors():
        raise MediaToolError(f"ffmpeg failed {doing}: {last_error(run)}")
    return run


def _samples(path: Path) -> int:
    try:
        return path.stat().st_size // PCM_BYTES_PER_SAMPLE
    except OSError as exc:
        raise MediaToolError(f"cannot read {path.name}: {exc.strerror}") from None


def mix_voice_over_bed(
    settings: Settings, voice_pcm: Path, bed_pcms: list[Path], out_pcm: Path, bed_level_db: float = -18.0
) -> MixResult:
    """Write ``voice_pcm`` over the music ``bed_pcms`` (played in this order, looped) to ``out_pcm``,
    the bed ``bed_level_db`` under the voice in its pauses (rules in the module docstring)."""
    lengths = [_samples(p) for p in bed_pcms]
    plan = plan_mix(_samples(voice_pcm), lengths)
    inputs = input_args(voice_pcm, [p for p, n in zip(bed_pcms, lengths, strict=True) if n > 0])
    run = run_tool(
        settings,
        [*inputs, "-filter_complex", measure_graph(plan), "-map", "[voice]", "-map", "[bed]", "-f", "null", "-"],
        "measuring the voice and the music",
    )
    voice_lufs, bed_lufs = parse_loudness(run.log)
    if voice_lufs <= SILENCE_LUFS:
        raise MediaToolError("the voice has no measurable loudness (silent, or shorter than 0.4 s)")
    if bed_lufs <= SILENCE_LUFS:
        raise BedUnavailable("the music to put under the voice is silent")
    gain = bed_gain_db(voice_lufs, bed_lufs, bed_level_db)
    graph = mix_graph(plan, gain, gate_threshold(voice_lufs))
    out = ["-map", "[mix]", "-c:a", "pcm_f32le", "-fflags", "+bitexact", "-f", "f32le", "-y", f"file:{out_pcm}"]
    run_tool(settings, [*inputs, "-filter_complex", graph, *out], "mixing the voice over the music")
    if (written := _samples(out_pcm)) != plan.total:
        raise MediaToolError(f"the mix holds {written:,} samples where {plan.total:,} were expected")
    return MixResult(
        duration_ms=plan.total * 1000 // PCM_RATE,
        voice_lufs=voice_lufs,
        bed_lufs=bed_lufs,
        bed_gain_db=gain,
        duck_db=DUCK_DB,
        intro_ms=INTRO_MS,
        outro_ms=OUTRO_MS,
    )
