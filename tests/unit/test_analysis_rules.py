"""Pure parts of the analysis: parsing ffmpeg 5.1's summaries, thresholds -> warnings, the loop cut."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ooma_moh.analysis import (
    MONO_LOSS_CAP_DB,
    WARNINGS,
    LoopPlan,
    Measures,
    analysis_dict,
    clipped_ratio,
    dc_to_remove,
    decode_graph,
    labelled_sections,
    mean_volume,
    parse_measures,
    plan_loop,
    silences,
    silent_edges,
    warnings_for,
)
from ooma_moh.errors import MediaToolError

# Captured from ffmpeg 5.1 (the decode graph on a 3.5 s stereo WAV: 1 s silence, 1 s tone, silence;
# channel 2 from a clipped file's, the mono and band powers from a quieter one's), with a summary of
# another filter between.
LOG = """\
[silencedetect @ 0x555f7dc68b40] [info] silence_start: 0
[silencedetect @ 0x555f7dc68b40] [info] silence_end: 1 | silence_duration: 1
[silencedetect @ 0x555f7dc68b40] [info] silence_start: 2.00006
[silencedetect @ 0x555f7dc68b40] [info] silence_end: 3.5 | silence_duration: 1.49994
[volumedetect@band @ 0x55677c1db4c0] [info] n_samples: 56000
[volumedetect@band @ 0x55677c1db4c0] [info] mean_volume: -14.7 dB
[volumedetect@band @ 0x55677c1db4c0] [info] max_volume: -2.1 dB
[astats@dc @ 0x55677c1d8a80] [info] Overall
[astats@dc @ 0x55677c1d8a80] [info] DC offset: -0.000000
[volumedetect@mono @ 0x55677c1d7a40] [info] n_samples: 56000
[volumedetect@mono @ 0x55677c1d7a40] [info] mean_volume: -14.5 dB
[volumedetect@mono @ 0x55677c1d7a40] [info] max_volume: -3.0 dB
[Parsed_volumedetect_7 @ 0x555f7dc8a340] [info] mean_volume: -14.5 dB
[astats@native @ 0x555f7dc5bb40] [info] Channel: 1
[astats@native @ 0x555f7dc5bb40] [info] Peak level dB: -6.020335
[astats@native @ 0x555f7dc5bb40] [info] Flat factor: 0.000000
[astats@native @ 0x555f7dc5bb40] [info] Peak count: 200
[astats@native @ 0x555f7dc5bb40] [info] Channel: 2
[astats@native @ 0x555f7dc5bb40] [info] Peak level dB: 0.000265
[astats@native @ 0x555f7dc5bb40] [info] Flat factor: 31.731110
[astats@native @ 0x555f7dc5bb40] [info] Peak count: 101880
[astats@native @ 0x555f7dc5bb40] [info] Overall
[astats@native @ 0x555f7dc5bb40] [info] RMS level dB: -17.481309
[astats@native @ 0x555f7dc5bb40] [info] Number of samples: 154350
"""

CLEAN = Measures(
    channels=2,
    clipped_ratio=0.0,
    channel_power_db=-20.0,
    dc_offset=0.0,
    mono_power_db=-17.0,
    band_power_db=-18.0,
    silences=(),
)
RATE = 16000


def test_parse_measures_from_a_captured_log() -> None:
    m = parse_measures(LOG, 2, clipping=True)
    assert m.channels == 2
    # channel 2 is at full scale in runs (flat factor > 0): its peak count over both channels' samples
    assert m.clipped_ratio == pytest.approx(101880 / (2 * 154350))
    assert m.channel_power_db == -17.481309
    assert m.dc_offset == 0.0 and m.mono_power_db == -14.5 and m.band_power_db == -14.7
    assert m.silences == ((0.0, 1.0), (2.00006, 3.5))
    assert m.mono_loss_db == pytest.approx(-17.481309 + 10 * math.log10(2) + 14.5)
    assert m.phone_band_ratio == pytest.approx(10 ** (-0.2 / 10))


def test_lossy_input_has_its_power_from_volumedetect() -> None:
    log = LOG + (
        "[volumedetect@native @ 0x55] [info] n_samples: 0\n"
        "[volumedetect@native @ 0x56] [info] n_samples: 308700\n"
        "[volumedetect@native @ 0x56] [info] mean_volume: -17.5 dB\n"
        "[volumedetect@native @ 0x56] [info] max_volume: -6.0 dB\n"
    )
    m = parse_measures(log, 2, clipping=False)
    assert m.clipped_ratio == 0.0 and m.channel_power_db == -17.5 and m.channels == 2
    with pytest.raises(MediaToolError, match="volumedetect"):
        parse_measures(LOG, 2, clipping=False)


def test_a_missing_summary_is_the_tools_failure() -> None:
    with pytest.raises(MediaToolError, match="native"):
        parse_measures(LOG.replace("astats@native", "astats@other"), 2, clipping=True)
    with pytest.raises(MediaToolError, match="band"):
        labelled_sections("[Parsed_astats_3 @ 0x1] [info] RMS level dB: -3.0", "band")


def test_the_last_summary_wins() -> None:
    empty_first = "[astats@dc @ 0x1] [info] Overall\n[astats@dc @ 0x1] [info] DC offset: nan\n"
    assert labelled_sections(empty_first + LOG, "dc") == [{"DC offset": -0.0}]
    first_graph = (
        "[volumedetect@mono @ 0x1] [info] n_samples: 0\n[volumedetect@mono @ 0x1] [info] mean_volume: -3.0 dB\n"
    )
    assert mean_volume(first_graph + LOG, "mono") == -14.5
    twice = LOG + LOG.replace("Peak count: 200", "Peak count: 7")
    native = labelled_sections(twice, "native")
    assert len(native) == 3 and native[0]["Peak count"] == 7 and native[2]["Number of samples"] == 154350


def test_full_scale_counts_only_in_runs() -> None:
    at_full_scale_once = {"Peak level dB": 0.0, "Flat factor": 0.0, "Peak count": 50.0}
    in_runs = {"Peak level dB": -0.0003, "Flat factor": 12.0, "Peak count": 50.0}
    below = {"Peak level dB": -0.5, "Flat factor": 12.0, "Peak count": 50.0}
    assert clipped_ratio([at_full_scale_once, below], 1000) == 0.0
    assert clipped_ratio([in_runs, below], 1000) == 50 / 2000
    assert clipped_ratio([], 0) == 0.0


def test_silences_pair_starts_with_ends() -> None:
    log = "silence_start: -0.01\nsilence_end: 0.5 | silence_duration: 0.51\nsilence_start: 9.25\n"
    assert silences(log) == [(0.0, 0.5)]  # an unended start is not a silence; before 0 is 0


def test_mono_loss_rules() -> None:
    assert dataclasses.replace(CLEAN, channels=1, mono_power_db=-40.0).mono_loss_db == 0.0
    in_phase = dataclasses.replace(CLEAN, channel_power_db=-20.0, mono_power_db=-20.0 + 10 * math.log10(2))
    assert in_phase.mono_loss_db == pytest.approx(0.0, abs=1e-9)
    assert dataclasses.replace(CLEAN, mono_power_db=-30.0).mono_loss_db == pytest.approx(10 * math.log10(2) + 10)
    assert dataclasses.replace(CLEAN, mono_power_db=-math.inf).mono_loss_db == MONO_LOSS_CAP_DB
    assert dataclasses.replace(CLEAN, mono_power_db=-100.0).mono_loss_db == MONO_LOSS_CAP_DB
    assert dataclasses.replace(CLEAN, mono_power_db=-5.0).mono_loss_db == 0.0  # never a gain


def test_phone_band_ratio_is_a_share() -> None:
    assert dataclasses.replace(CLEAN, band_power_db=-20.0).phone_band_ratio == pytest.approx(0.5, abs=0.002)
    assert dataclasses.replace(CLEAN, band_power_db=-16.9).phone_band_ratio == 1.0
    assert CLEAN.phone_band_ratio == pytest.approx(10 ** (-0.1), abs=1e-6)
    assert dataclasses.replace(CLEAN, mono_power_db=-math.inf).phone_band_ratio == 0.0


def test_decode_graph_branches() -> None:
    to_pcm = "aresample=16000,aformat=sample_fmts=flt:channel_layouts=mono"
    plain = decode_graph(to_pcm, -50.0, analyse=False, find_silence=False, clipping=True)
    assert plain == f"[0:a:0]{to_pcm},asetnsamples=n=4096:p=0,asplit=2[pcm][e];[e]ebur128=peak=true,anullsink"
    trims = decode_graph(to_pcm, -45.0, analyse=False, find_silence=True, clipping=True)
    assert "asplit=3[pcm][e][s]" in trims and "silencedetect=noise=-45.0dB:duration=0.05" in trims
    full = decode_graph(to_pcm, -50.0, analyse=True, find_silence=False, clipping=True)
    assert full.startswith("[0:a:0]asplit=2[n][r];[n]astats@native=")
    lossy = decode_graph(to_pcm, -50.0, analyse=True, find_silence=False, clipping=False)
    assert lossy.startswith("[0:a:0]asplit=2[n][r];[n]aresample,volumedetect@native,anullsink;")
    assert f"[r]{to_pcm},asetnsamples=n=4096:p=0,asplit=6[pcm][e][m][d][b][s]" in full
    assert "silencedetect" in full  # the analysis needs it
    assert full.count("highpass=f=300") == 2 and full.count("lowpass=f=3400") == 2
    assert "[m]aresample,aformat=sample_fmts=s16,volumedetect@mono," in full  # 16 bits in its own branch
    assert "[d]aresample=1000:filter_size=8,astats@dc=" in full and ",volumedetect@band," in full


def test_loop_keeps_some_leading_silence_and_trims_the_end() -> None:
    total = 6 * RATE
    plan = plan_loop(total, [(0.0, 3.0), (5.5, 6.0)], trim=True, crossfade_ms=250)
    assert (plan.start, plan.end, plan.crossfade) == (3 * RATE - 4000, 5.5 * RATE, 4000)
    assert plan.samples == 5.5 * RATE - 3 * RATE  # the renditions start where the sound does
    assert plan.trimmed_ms() == {"start": 2750, "end": 500}
    assert plan.duration_ms == 2500


def test_loop_crossfade_is_at_most_a_quarter() -> None:
    plan = plan_loop(RATE, [], trim=True, crossfade_ms=5000)
    assert (plan.start, plan.end, plan.crossfade) == (0, RATE, RATE // 4)
    assert plan.samples == RATE - RATE // 4


def test_loop_without_trim_or_crossfade() -> None:
    found = [(0.0, 1.0), (2.0, 3.0)]
    assert plan_loop(3 * RATE, found, trim=False, crossfade_ms=0) == LoopPlan(3 * RATE, 0, 3 * RATE, 0)
    no_fade = plan_loop(3 * RATE, found, trim=True, crossfade_ms=0)
    assert (no_fade.start, no_fade.end, no_fade.crossfade) == (RATE, 2 * RATE, 0)


def test_all_silence_is_not_trimmed_away() -> None:
    plan = plan_loop(2 * RATE, [(0.0, 2.0)], trim=True, crossfade_ms=250)
    assert (plan.start, plan.end) == (0, 2 * RATE)


def test_silent_edges_tolerate_printed_precision() -> None:
    total = 1800 * RATE
    assert silent_edges(total, [(1795.0, 1799.99)]) == (0, 5 * RATE)  # ends within EDGE_SLACK_S
    assert silent_edges(total, [(10.0, 20.0)]) == (0, 0)  # in the middle: neither


def test_loop_graph_cuts_and_crossfades() -> None:
    graph = LoopPlan(100_000, 2000, 90_000, 4000).graph("volume=1.00dB:precision=double")
    assert graph.startswith("[0:a]atrim=start_sample=2000:end_sample=90000,asetpts=PTS-STARTPTS,volume=1.00dB")
    assert "[head]atrim=end_sample=4000[h]" in graph and "[body]atrim=start_sample=4000," in graph
    assert graph.endswith("[b][h]acrossfade=ns=4000:c1=tri:c2=tri[looped]")
    assert LoopPlan(100, 0, 100, 0).graph("volume=0.00dB") == "[0:a]volume=0.00dB[looped]"


def test_each_warning_has_its_threshold() -> None:
    long_loop = LoopPlan(20 * RATE, 0, 20 * RATE, 4000)
    samples = 20 * RATE
    assert warnings_for(CLEAN, samples, long_loop) == []
    cases = {
        "clipping": dataclasses.replace(CLEAN, clipped_ratio=0.001),
        "dc_offset": dataclasses.replace(CLEAN, dc_offset=-0.01),
        "mono_cancellation": dataclasses.replace(
            CLEAN, mono_power_db=-20.0 + 10 * math.log10(2) - 6.0, band_power_db=-17.0 + 10 * math.log10(2) - 6.0
        ),
        "outside_phone_band": dataclasses.replace(CLEAN, band_power_db=-20.1),
        "mostly_silence": dataclasses.replace(CLEAN, silences=((0.0, 6.0), (12.0, 16.0))),
    }
    for code, measures in cases.items():
        assert warnings_for(measures, samples, long_loop) == [code]
    just_under = {
        "clipping": dataclasses.replace(CLEAN, clipped_ratio=0.00099),
        "dc_offset": dataclasses.replace(CLEAN, dc_offset=0.0099),
        "mono_cancellation": dataclasses.replace(
            CLEAN, mono_power_db=-20.0 + 10 * math.log10(2) - 5.9, band_power_db=-17.0 + 10 * math.log10(2) - 5.9
        ),
        "outside_phone_band": dataclasses.replace(CLEAN, band_power_db=-19.9),
        "mostly_silence": dataclasses.replace(CLEAN, silences=((0.0, 6.0), (12.0, 15.9))),
    }
    for measures in just_under.values():
        assert warnings_for(measures, samples, long_loop) == []
    assert warnings_for(CLEAN, samples, LoopPlan(20 * RATE, 0, 15 * RATE + 3999, 4000)) == ["too_short"]
    assert warnings_for(CLEAN, samples, LoopPlan(20 * RATE, 0, 15 * RATE + 4000, 4000)) == []


def test_warnings_come_in_a_stable_order() -> None:
    everything = Measures(2, 0.5, -20.0, 0.2, -40.0, -60.0, ((0.0, 9.0),))
    assert warnings_for(everything, 10 * RATE, LoopPlan(10 * RATE, 0, 10 * RATE, 0)) == list(WARNINGS)


def test_analysis_dict_shape() -> None:
    loop = plan_loop(20 * RATE, [(0.0, 1.0)], trim=True, crossfade_ms=250)
    got = analysis_dict(dataclasses.replace(CLEAN, dc_offset=0.012345), (-23.456, -1.04), -20.004, 20 * RATE, loop)
    assert got == {
        "loudness_lufs_in": -23.5,
        "loudness_lufs_out": -20.0,
        "true_peak_dbtp_in": -1.0,
        "clipped_ratio": 0.0,
        "dc_offset": 0.0123,
        "silence_trimmed_ms": {"start": 750, "end": 0},
        "mono_loss_db": 0.0,
        "phone_band_ratio": 0.79,
        "duration_ms": 19000,  # 20 s - 750 ms trimmed - 250 ms crossfaded
        "loop_seam": "crossfaded",
        "warnings": ["dc_offset"],
    }
    clean_seam = analysis_dict(CLEAN, (-20.0, -3.0), -20.0, RATE, plan_loop(RATE, [], trim=True, crossfade_ms=0))
    assert clean_seam["loop_seam"] == "clean" and clean_seam["duration_ms"] == 1000


def test_only_an_audible_offset_is_removed() -> None:
    assert dc_to_remove(None) == 0.0
    assert dc_to_remove(dataclasses.replace(CLEAN, dc_offset=0.0009)) == 0.0
    assert dc_to_remove(dataclasses.replace(CLEAN, dc_offset=-0.001)) == -0.001
