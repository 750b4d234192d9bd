"""Pure parts of mixing a voice over music (ooma_moh/mix.py): the lengths, the gain arithmetic, the
filter graphs built for given inputs, the log parsing, the constants."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from ooma_moh import mix
from ooma_moh.errors import BedUnavailable, MediaToolError
from ooma_moh.ffmpeg import Run
from ooma_moh.media_rules import PCM_RATE

SECOND = PCM_RATE


def summary(name: str, lufs: str) -> str:
    """An ``ebur128`` summary as ffmpeg 5.1 logs it with ``-loglevel level+info``."""
    return (
        f"[ebur128@{name} @ 0x55740cb3a240] [info] Summary:\n\n  Integrated loudness:\n    I:         {lufs} LUFS\n"
        "    Threshold: -31.0 LUFS\n\n  Loudness range:\n    LRA:         0.0 LU\n\n"
        "  Sample peak:\n    Peak:      -18.1 dBFS\n"
    )


def test_constants_are_sane() -> None:
    assert 0 < mix.FADE_IN_MS <= mix.INTRO_MS <= 5000
    assert 0 < mix.FADE_OUT_MS <= mix.OUTRO_MS <= 5000
    assert 6.0 <= mix.DUCK_DB <= 20.0
    assert 10 <= mix.ATTACK_MS < mix.RELEASE_MS <= 500  # tens of ms down, hundreds back up
    assert mix.GATE_RATIO > 1 and 10.0 <= mix.GATE_BELOW_DB <= 30.0
    # far under anything audible, yet its square (the RMS detector's power) is a normal double
    assert 20 * math.log10(mix.SIDECHAIN_FLOOR) <= -100 and mix.SIDECHAIN_FLOOR**2 > 1e-300
    assert mix.INTRO_MS * PCM_RATE % 1000 == 0 and mix.OUTRO_MS * PCM_RATE % 1000 == 0  # whole samples


@pytest.mark.parametrize(
    "voice, bed, level, gain",
    [
        (-20.0, -30.0, -18.0, -8.0),
        (-15.6, -27.8, -18.0, -5.8),
        (-23.0, -14.0, -10.0, -19.0),
        (-20.0, -38.0, -18.0, 0.0),
        (-20.123, -30.0, -18.0, -8.12),
    ],
)
def test_bed_gain_puts_the_bed_its_level_under_the_voice(voice: float, bed: float, level: float, gain: float) -> None:
    got = mix.bed_gain_db(voice, bed, level)
    assert got == gain
    assert math.copysign(1.0, got) == math.copysign(1.0, gain)  # never "-0.00"
    assert bed + got == pytest.approx(voice + level, abs=0.005)


@pytest.mark.parametrize("duck_db", [mix.DUCK_DB, 6.0, 20.0])
def test_duck_weight_lowers_the_bed_by_exactly_duck_db(duck_db: float) -> None:
    weight = mix.duck_weight(duck_db)
    assert -1.0 < weight < 0.0
    assert 20 * math.log10(1.0 + weight) == pytest.approx(-duck_db, abs=1e-4)
    assert mix.duck_weight(0.0) == 0.0


def test_gate_threshold_follows_the_voice() -> None:
    assert mix.gate_threshold(-20.0) == pytest.approx(10 ** (-(20 + mix.GATE_BELOW_DB) / 20))
    assert mix.gate_threshold(-40.0) == pytest.approx(mix.gate_threshold(-20.0) / 10)
    assert mix.gate_threshold(30.0) == 1.0  # ffmpeg's maximum


def test_plan_lengths() -> None:
    plan = mix.plan_mix(10 * SECOND, [5 * SECOND, 0, 3 * SECOND])
    assert plan.beds == (5 * SECOND, 3 * SECOND)  # the empty file is skipped
    assert plan.intro == mix.INTRO_MS * PCM_RATE // 1000 and plan.outro == mix.OUTRO_MS * PCM_RATE // 1000
    assert plan.total == plan.intro + 10 * SECOND + plan.outro
    assert plan.cycle == 8 * SECOND and plan.loops
    assert not mix.plan_mix(10 * SECOND, [plan.total]).loops


def test_nothing_to_mix_is_refused() -> None:
    with pytest.raises(MediaToolError, match="voice"):
        mix.plan_mix(0, [SECOND])
    with pytest.raises(BedUnavailable):
        mix.plan_mix(SECOND, [0, 0])
    with pytest.raises(BedUnavailable):
        mix.plan_mix(SECOND, [])


def test_measure_graph_meters_the_voice_and_the_bed_as_played() -> None:
    plan = mix.plan_mix(10 * SECOND, [5 * SECOND, 3 * SECOND])
    graph = mix.measure_graph(plan)
    assert graph.startswith("[0:a]ebur128@voice=")
    assert f"[1:a][2:a]concat=n=2:v=0:a=1,aloop=loop=-1:size={8 * SECOND},atrim=end_sample={plan.total}" in graph
    assert "ebur128@bed=" in graph and graph.endswith("[bed]")
    assert graph.count("framelog=verbose") == 2  # no line per 100 ms in the log


def test_a_long_single_bed_is_neither_concatenated_nor_looped() -> None:
    plan = mix.plan_mix(60 * SECOND, [180 * SECOND])
    for graph in (mix.measure_graph(plan), mix.mix_graph(plan, -3.0, 0.01)):
        assert f"[1:a]atrim=end_sample={plan.total}," in graph
        assert "concat" not in graph and "aloop" not in graph


def test_mix_graph_for_given_inputs() -> None:
    plan = mix.plan_mix(10 * SECOND, [5 * SECOND, 3 * SECOND])
    graph = mix.mix_graph(plan, -5.8, mix.gate_threshold(-15.6))
    fade_out_start = plan.total - mix.FADE_OUT_MS * PCM_RATE // 1000
    # the voice: after the intro, padded to the whole length, split into what is heard and the key
    assert f"[0:a]adelay=delays={plan.intro}S:all=1,apad=whole_len={plan.total},asplit=2[voice][key]" in graph
    assert f"[key]aeval=val(0)+{mix.SIDECHAIN_FLOOR:g}[sc]" in graph  # rule 5
    # the bed: in order, looped, cut, its gain, the fades, split
    assert (
        f"[1:a][2:a]concat=n=2:v=0:a=1,aloop=loop=-1:size={8 * SECOND},atrim=end_sample={plan.total},"
        "volume=-5.80dB:precision=double,"
        f"afade=t=in:ss=0:ns={mix.FADE_IN_MS * 16}:curve=qsin,"
        f"afade=t=out:ss={fade_out_start}:ns={mix.FADE_OUT_MS * 16}:curve=qsin,asplit=2[bed][tocut]"
    ) in graph
    # the ducking copy: gated by the voice, open = exactly 1 (knee 1), closed = 0, scaled negative
    gate = re.search(r"\[tocut\]\[sc\]sidechaingate=([^,]*),volume=([-\d.]+):precision=double\[cut\]", graph)
    assert gate is not None
    options = dict(kv.split("=") for kv in gate.group(1).split(":"))
    assert options == {
        "threshold": f"{mix.gate_threshold(-15.6):.6g}",
        "ratio": f"{mix.GATE_RATIO:g}",
        "attack": str(mix.ATTACK_MS),
        "release": str(mix.RELEASE_MS),
        "knee": "1",
        "range": "0",
        "detection": "rms",
    }
    assert float(gate.group(2)) == mix.duck_weight()
    # summed as they are: no normalisation (amix's negative weights lose their sign in 5.1)
    assert graph.endswith("[voice][bed][cut]amix=inputs=3:normalize=0[mix]")


def test_same_plan_same_graph() -> None:
    plan = mix.plan_mix(12_345, [6_789])
    assert mix.mix_graph(plan, -1.0, 0.01) == mix.mix_graph(mix.plan_mix(12_345, [6_789]), -1.0, 0.01)


def test_input_args_read_raw_pcm_files_only() -> None:
    args = mix.input_args(Path("/w/voice.f32"), [Path("/m/a.f32"), Path("/m/b.f32")])
    assert args.count("-i") == 3 and args.count("f32le") == 3 and args.count(str(PCM_RATE)) == 3
    assert [args[i + 1] for i, a in enumerate(args) if a == "-i"] == [
        "file:/w/voice.f32",
        "file:/m/a.f32",
        "file:/m/b.f32",
    ]


def test_parse_loudness_finds_each_named_summary() -> None:
    log = "[info] size=N/A\n" + summary("voice", "-21.0") + summary("bed", "-27.8")
    assert mix.parse_loudness(log) == (-21.0, -27.8)
    assert mix.parse_loudness(summary("bed", "-70.0") + summary("voice", "-15.6")) == (-15.6, -70.0)
    with pytest.raises(MediaToolError):
        mix.parse_loudness(summary("voice", "-21.0"))
    with pytest.raises(MediaToolError):
        mix.parse_loudness("[error] nothing")


def test_last_error_has_no_prefix_and_no_directory() -> None:
    log = "[info] Input #0\n[f32le @ 0x5] [error] file:/tmp/work/x/voice.f32: No such file or directory\n[info] bye\n"
    assert mix.last_error(Run(1, log)) == "voice.f32: No such file or directory"
    assert mix.last_error(Run(1, "")) == "exit 1"


def test_result_is_frozen() -> None:
    result = mix.MixResult(19000, -15.6, -27.8, -5.8, 12.0, 2000, 3000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.duck_db = 0.0  # type: ignore[misc]
