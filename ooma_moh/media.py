"""Upload validation and conversion: the only module that runs ffmpeg or uses pydub.

An upload is never trusted: its container is recognised from its first bytes (not its name or
headers), and ffmpeg is then pinned to that one demuxer, to the decoders that container may hold,
and to the ``file`` protocol, so a playlist disguised as audio is rejected instead of followed.

Conversion is two ffmpeg runs over the upload:

1. *decode + measure*: decode once (at most ``max_duration_s`` + 1 s of it) to 16 kHz mono float
   PCM in the work directory, while an ``ebur128`` branch measures integrated loudness and true
   peak of that same signal, and the analysis branches (:mod:`ooma_moh.analysis`) measure
   clipping, DC offset, mono compatibility, the phone band's share and the silences;
2. *encode*: trim the leading and trailing silence, subtract the DC offset, apply the gain that
   brings it to the target loudness (and a limiter only when the gain would push the true peak
   over the ceiling), crossfade the end into the start (:func:`ooma_moh.analysis.plan_loop`),
   then write the five renditions in one pass.

The measured values are rounded before use, so the same input and settings give byte-identical
renditions.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import ffmpeg
from .analysis import (
    LOSSLESS_CONTAINERS,
    LoopPlan,
    Measures,
    analysis_dict,
    dc_to_remove,
    decode_graph,
    parse_measures,
    plan_loop,
    silences,
)
from .config import Settings
from .errors import MediaToolError, StorageError, UploadRejected
from .media_rules import (
    CONTAINERS,
    MAX_LIMIT_ROUNDS,
    PCM_BYTES_PER_SAMPLE,
    PCM_RATE,
    SILENCE_LUFS,
    Conversion,
    InputWatch,
    LoudnessPlan,
    check_rendition_size,
    declared_duration_s,
    parse_ebur128,
    plan_loudness,
    public_detail,
    refuse_if_too_costly,
    sniff_container,
)
from .model import RENDITION_FORMATS
from .rejections import Rejection


@dataclass(frozen=True)
class Decoded:
    """What the decode run found: the container, loudness and true peak of the 16 kHz mono PCM,
    its length, the analysis (None when not analysed) and the silences (empty when not looked for)."""

    container: str
    lufs: float
    peak: float
    samples: int
    measures: Measures | None
    silences: tuple[tuple[float, float], ...]


class FfmpegConverter:
    """Validates and converts uploads with a restricted, resource-limited ffmpeg."""

    def __init__(self, settings: Settings, *, verify: bool = True, analyse: bool = True) -> None:
        self.settings = settings
        # both False only in bench/ingest.py, to measure what verification and analysis cost
        self.verify = verify
        self.analyse = analyse
        self.limits = ffmpeg.Limits(settings.ffmpeg_cpu_s, settings.ffmpeg_wall_s, settings.ffmpeg_memory_mb << 20)

    def _run(self, args: list[str], watch: InputWatch | None = None) -> ffmpeg.Run:
        try:
            run = ffmpeg.run(self.settings.ffmpeg, args, self.limits, watch)
        except ffmpeg.ToolMissing:
            raise MediaToolError(f"ffmpeg not found ({self.settings.ffmpeg}): install ffmpeg") from None
        if run.could_not_start:
            raise MediaToolError(
                f"ffmpeg cannot start within ffmpeg_memory_mb={self.settings.ffmpeg_memory_mb}:"
                " it needs about 400 MB of address space to load its libraries; raise the limit"
            )
        return run

    @staticmethod
    def _storage_check(run: ffmpeg.Run, doing: str, source: Path | None = None) -> None:
        """Raise ``StorageError`` if ffmpeg failed for lack of space or permission (the server's
        problem, never reported as the upload's). An input/output error on ``source`` itself is
        the file's: the Matroska and FLAC demuxers answer EIO to a file that ends inside a header."""
        log = run.log
        if source is not None:
            log = "\n".join(line for line in log.splitlines() if not line.endswith(f"{source}: Input/output error"))
        number = ffmpeg.storage_failure(log)
        if number is not None:
            raise StorageError.from_errno(number, doing)

    def decode(self, source: Path, pcm: Path) -> Decoded:
        """Decode ``source`` to 16 kHz mono f32le at ``pcm``, measuring it on the way."""
        with open(source, "rb") as fh:
            container = sniff_container(fh.read(64))
        demuxer, whitelist, decoders = CONTAINERS[container]
        limit = self.settings.max_duration_s + 1.0
        clipping = container in LOSSLESS_CONTAINERS
        graph = decode_graph(  # downmix first: the resampler then has one channel to work on
            f"aresample,aformat=sample_fmts=flt:channel_layouts=mono,aresample={PCM_RATE},aformat=sample_fmts=flt",
            self.settings.silence_threshold_db,
            analyse=self.analyse,
            find_silence=self.settings.trim_silence,
            clipping=clipping,
        )
        watch = InputWatch(self.settings)
        run = self._run(
            [
                "-protocol_whitelist",
                "file",
                "-format_whitelist",
                whitelist,
                "-codec_whitelist",
                decoders,
                "-f",
                demuxer,
                "-t",
                f"{limit:.3f}",
                "-i",
                str(source),
                "-filter_complex",
                graph,
                "-map",
                "[pcm]",
                "-f",
                "f32le",
                "-y",
                str(pcm),
            ],
            watch,
        )
        if watch.rejection is not None:
            raise watch.rejection
        if watch.other_codecs and not watch.audio_seen:
            raise UploadRejected(Rejection.NO_AUDIO, "the file contains no audio (only pictures or video)")
        refuse_if_too_costly(run)
        self._storage_check(run, "decoding the upload", source)
        errors = watch.upload_errors(run.errors())
        if refused := watch.codec_refused(errors, container):
            raise refused
        if run.returncode != 0 or errors:
            detail = (errors or run.log.strip().splitlines() or ["no output"])[-1]
            raise UploadRejected(
                Rejection.UNDECODABLE, f"the {container} file cannot be decoded: {public_detail(detail)}"
            )
        samples = pcm.stat().st_size // PCM_BYTES_PER_SAMPLE
        self._check_duration(samples, declared_duration_s(run.log), container)
        lufs, peak = parse_ebur128(run.log)
        if lufs <= SILENCE_LUFS:
            raise UploadRejected(Rejection.SILENT, "the file is silent")
        measures = parse_measures(run.log, watch.channels, clipping) if self.analyse else None
        return Decoded(container, lufs, peak, samples, measures, tuple(silences(run.log)))

    def _check_duration(self, samples: int, declared: float | None, container: str) -> None:
        seconds = samples / PCM_RATE
        if seconds > self.settings.max_duration_s:
            raise UploadRejected(
                Rejection.TOO_LONG, f"the audio is longer than the limit of {self.settings.max_duration_s:g} s"
            )
        if seconds < self.settings.min_duration_s:
            raise UploadRejected(
                Rejection.TOO_SHORT,
                f"the audio lasts {seconds:.2f} s, under the minimum of {self.settings.min_duration_s:g} s",
            )
        if declared is not None and seconds < declared - max(0.5, 0.02 * declared):
            raise UploadRejected(
                Rejection.TRUNCATED,
                f"the {container} file is truncated: it declares {declared:.1f} s but only {seconds:.1f} s decode",
            )

    def _tool_check(self, run: ffmpeg.Run, doing: str) -> None:
        """Our own, already validated data: any failure is the server's, never the upload's."""
        self._storage_check(run, doing)
        refuse_if_too_costly(run)
        if run.returncode != 0 or run.errors():
            last = (run.errors() or run.log.strip().splitlines() or [f"exit {run.returncode}"])[-1]
            raise MediaToolError(f"ffmpeg failed {doing}: {public_detail(last)}")

    def encode(self, pcm: Path, plan: LoudnessPlan, loop: LoopPlan, out_base: Path) -> dict[str, Path]:
        """Write the five renditions of ``pcm``, cut by ``loop``, next to ``out_base``; return
        extension -> path."""
        graph = (
            f"{loop.graph(plan.filters())};[looped]asplit=2[hi][lo];[hi]asplit=2[sln16][g722];"
            "[lo]aresample=8000,asplit=3[sln][ulaw][alaw]"
        )
        files = {f.extension: out_base.with_name(f"{out_base.name}.{f.extension}") for f in RENDITION_FORMATS}
        args = ["-f", "f32le", "-ar", str(PCM_RATE), "-ac", "1", "-i", str(pcm), "-filter_complex", graph]
        for fmt in RENDITION_FORMATS:
            args += [
                "-map",
                f"[{fmt.extension}]",
                "-c:a",
                fmt.codec,
                "-fflags",
                "+bitexact",
                "-f",
                fmt.muxer,
                "-y",
                str(files[fmt.extension]),
            ]
        self._tool_check(self._run(args), "writing the renditions")
        return files

    def verify_renditions(self, files: dict[str, Path], samples_16k: int) -> None:
        """Every rendition present and of the length the loop plan implies (``samples_16k``, see
        :func:`check_rendition_size`); ``StorageError`` otherwise — ffmpeg may say it succeeded."""
        for fmt in RENDITION_FORMATS:
            try:
                size = files[fmt.extension].stat().st_size
            except (KeyError, FileNotFoundError):
                raise StorageError(
                    "incomplete", f"the .{fmt.extension} rendition was not written; nothing was changed"
                ) from None
            if problem := check_rendition_size(fmt.extension, size, samples_16k):
                raise StorageError(
                    "incomplete",
                    f"a rendition was written incompletely ({problem}); is the server's disk full? Nothing was changed",
                )

    def limit(self, pcm: Path, plan: LoudnessPlan, out: Path) -> tuple[float, float]:
        """Apply ``plan`` to ``pcm`` into ``out`` (same PCM format); return its LUFS and true peak."""
        graph = f"[0:a]{plan.filters()},asplit=2[pcm][m];[m]ebur128=peak=true[e];[e]anullsink"
        run = self._run(
            [
                "-f",
                "f32le",
                "-ar",
                str(PCM_RATE),
                "-ac",
                "1",
                "-i",
                str(pcm),
                "-filter_complex",
                graph,
                "-map",
                "[pcm]",
                "-f",
                "f32le",
                "-y",
                str(out),
            ]
        )
        self._tool_check(run, "limiting the peaks")
        return parse_ebur128(run.log)

    def convert(self, source: Path, workdir: Path) -> Conversion:
        """Validate ``source`` and produce its verified renditions inside ``workdir``."""
        pcm = workdir / "decoded.f32"
        decoded = self.decode(source, pcm)
        samples, measures = decoded.samples, decoded.measures
        target, ceiling = self.settings.loudness_lufs, self.settings.true_peak_dbtp
        lufs = decoded.lufs
        plan = plan_loudness(lufs, decoded.peak, target, ceiling, dc_to_remove(measures))
        # Limiting lowers loudness: limit into a new PCM, re-measure, and plan the rest from there,
        # until the remaining gain is small or needs no limiter (peaky input only; rare).
        for round_ in range(MAX_LIMIT_ROUNDS):
            if plan.limit_linear is None or abs(plan.gain_db) < 0.3:
                break
            limited = workdir / f"limited{round_}.f32"
            lufs, peak_now = self.limit(pcm, plan, limited)
            if limited.stat().st_size != samples * PCM_BYTES_PER_SAMPLE:
                raise StorageError(
                    "incomplete",
                    "the limited audio was written incompletely; is the server's disk full? Nothing was changed",
                )
            pcm.unlink()
            pcm = limited
            plan = plan_loudness(lufs, peak_now, target, ceiling)  # the offset went with the first round
        s = self.settings
        loop = plan_loop(samples, decoded.silences, s.trim_silence, s.loop_crossfade_ms)
        files = self.encode(pcm, plan, loop, workdir / "rendition")
        pcm.unlink()
        if self.verify:
            self.verify_renditions(files, loop.samples)
        analysis = (
            analysis_dict(measures, (decoded.lufs, decoded.peak), lufs + plan.gain_db, samples, loop)
            if measures
            else {}
        )
        return Conversion(decoded.container, loop.duration_ms, files, analysis)


def write_wav(sln16: bytes, out: Path) -> None:
    """Write 16 kHz signed-linear mono audio as a WAV file (what ``listen`` gives an admin)."""
    from pydub import AudioSegment  # imported here: pydub warns at import when ffmpeg is absent

    # export() hands back the file it wrote, still open: closed here, not by the garbage collector
    AudioSegment(data=sln16, sample_width=2, frame_rate=16000, channels=1).export(str(out), format="wav").close()


def synth_sample(settings: Settings, out: Path, freq: float, seconds: float) -> Path:
    """Write a short MP3 of a ``freq`` Hz tone (the demo's sample upload)."""
    code = subprocess.run(
        [
            settings.ffmpeg,
            "-hide_banner",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=f={freq}:sample_rate=44100:d={seconds}",
            "-af",
            "volume=-9dB",
            "-ac",
            "2",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    if code.returncode != 0:
        raise MediaToolError(f"ffmpeg could not synthesise the sample: {code.stderr.strip()[-200:]}")
    return out
