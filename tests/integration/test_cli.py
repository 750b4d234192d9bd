"""The ``ooma-moh`` commands, end to end on the embedded back end with real ffmpeg."""

from __future__ import annotations

import json
import wave
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest
from click.testing import CliRunner

from ooma_moh.app import open_catalog
from ooma_moh.cli import main
from ooma_moh.config import load_settings
from ooma_moh.holdstats import HoldDay, summary
from tests.audio import dominant_frequency, ffmpeg, tone


class Run(Protocol):
    """The ``run`` fixture: ``ooma-moh --home <tmp>/home ARGS``, checked to exit with ``code``; its output."""

    def __call__(self, *args: str, code: int = 0) -> str: ...


@pytest.fixture
def run(tmp_path: Path) -> Run:
    runner = CliRunner()
    home = tmp_path / "home"

    def invoke(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, ["--home", str(home), *args], catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result.output

    return invoke


def test_upload_refused_without_disclaimer(run: Run, tmp_path: Path) -> None:
    out = run("upload", "acme", str(tone(tmp_path / "a.wav", 440)), code=1)
    assert "disclaimer" in out and "nothing was stored" in out
    assert out.count("\n") == 1
    assert json.loads(run("list", "--json")) == []


def test_upload_show_list_listen_delete(run: Run, tmp_path: Path) -> None:
    source = tone(tmp_path / "hold music.ogg", 550, seconds=2, container="ogg")
    uploaded = json.loads(run("upload", "acme", str(source), "--accept-disclaimer", "--by", "alice", "--json"))
    assert uploaded["setting"] == "file" and uploaded["moh_class"] == "tenant-acme"
    assert uploaded["file"]["original_name"] == "hold music.ogg"
    assert uploaded["disclaimer"]["accepted_by"] == "alice"
    assert uploaded["disclaimer"]["sha256"] == uploaded["file"]["sha256"]
    assert {r["format"]: r["rate"] for r in uploaded["renditions"]} == {
        "sln": 8000,
        "sln16": 16000,
        "ulaw": 8000,
        "alaw": 8000,
        "g722": 16000,
    }

    shown = json.loads(run("show", "acme", "--json"))
    assert shown == uploaded
    assert "tenant-acme" in run("show", "acme")
    assert [t["tenant"] for t in json.loads(run("list", "--json"))] == ["acme"]

    out = tmp_path / "check.wav"
    listened = json.loads(run("listen", "acme", "-o", str(out), "--json"))
    assert listened["seconds"] == pytest.approx(1.75, abs=0.02)  # 2 s - the loop crossfade
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (16000, 1, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768.0
    assert dominant_frequency(samples[4000:20000], 16000) == pytest.approx(550, abs=3)

    deleted = json.loads(run("delete", "acme", "--json"))
    assert deleted["setting"] == "default" and deleted["moh_class"] == "default"
    message = run("listen", "acme", "-o", str(out), code=1)
    assert "default music" in message


def test_bad_upload_exit_code_and_one_line(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "x.mp3"
    bad.write_text("#EXTM3U\n/etc/passwd\n")
    out = run("upload", "acme", str(bad), "--accept-disclaimer", code=1)
    assert out.startswith("Error: not a supported audio file") and out.count("\n") == 1


def test_upload_from_stdin(tmp_path: Path) -> None:
    source = tone(tmp_path / "a.flac", 440, container="flac")
    result = CliRunner().invoke(
        main,
        ["--home", str(tmp_path / "h"), "upload", "acme", "-", "--name", "a.flac", "--accept-disclaimer", "--json"],
        input=source.read_bytes(),
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["file"]["container"] == "flac"


def test_invalid_tenant_and_config(run: Run, tmp_path: Path) -> None:
    assert "invalid tenant id" in run("show", "../x", code=1)
    bad = tmp_path / "bad.toml"
    bad.write_text("class_prefix = 'a b'\n")
    result = CliRunner().invoke(main, ["--config", str(bad), "list"])
    assert result.exit_code == 1 and "class_prefix" in result.output


def test_endpoint_map(run: Run) -> None:
    assert "no catalog" in run("endpoints", "--json", code=1)  # reading never creates a home
    run("init")
    assert json.loads(run("endpoints", "--json")) == {}
    assert run("endpoints", "set", "PJSIP/acme-100", "acme").strip() == "PJSIP/acme-100 -> acme"
    run("endpoints", "set", "PJSIP/acme-101", "acme")
    assert json.loads(run("endpoints", "--json")) == {"PJSIP/acme-100": "acme", "PJSIP/acme-101": "acme"}
    run("endpoints", "remove", "PJSIP/acme-100")
    assert json.loads(run("endpoints", "--json")) == {"PJSIP/acme-101": "acme"}
    assert "invalid endpoint" in run("endpoints", "set", "not an endpoint", "acme", code=1)
    assert "invalid tenant id" in run("endpoints", "set", "PJSIP/x", "../a", code=1)


def test_asterisk_conf_writes_refuses_to_overwrite_and_forces(run: Run, tmp_path: Path) -> None:
    samples = Path(__file__).resolve().parents[2] / "ooma_moh" / "asterisk_conf"
    names = sorted(p.name for p in samples.glob("*.conf"))
    dest = tmp_path / "staging" / "asterisk"  # created, parents too
    out = run("asterisk-conf", "--dest", str(dest))
    assert out.splitlines() == [f"wrote {dest / n}" for n in names]
    assert sorted(p.name for p in dest.iterdir()) == names  # no partial files left behind
    assert all((dest / n).read_bytes() == (samples / n).read_bytes() for n in names)

    edited = "; the operator's own pjsip.conf\n"
    (dest / "pjsip.conf").write_text(edited)
    (dest / "http.conf").unlink()
    refused = run("asterisk-conf", "--dest", str(dest), code=1)
    assert refused.startswith("Error: ") and f"{dest / 'pjsip.conf'}" in refused and "--force" in refused
    assert (dest / "pjsip.conf").read_text() == edited and not (dest / "http.conf").exists()  # nothing written

    forced = json.loads(run("asterisk-conf", "--dest", str(dest), "--force", "--json"))
    assert forced == {"dest": str(dest), "written": [str(dest / n) for n in names]}
    assert (dest / "pjsip.conf").read_bytes() == (samples / "pjsip.conf").read_bytes()
    assert (dest / "http.conf").exists()


def test_listen_in_phone_quality_and_restore_the_previous_file(run: Run, tmp_path: Path) -> None:
    first = tone(tmp_path / "first.wav", 440, seconds=3)
    second = tone(tmp_path / "second.wav", 660, seconds=3)
    run("upload", "acme", str(first), "--accept-disclaimer", "--by", "alice")
    assert "restore" in run("restore", "acme", "--accept-disclaimer", code=1)  # nothing replaced yet
    replaced = json.loads(run("upload", "acme", str(second), "--accept-disclaimer", "--by", "bob", "--json"))
    assert replaced["previous"]["original_name"] == "first.wav" and "analysis" in replaced
    assert "previous    first.wav" in run("show", "acme")

    out = tmp_path / "phone.wav"
    listened = json.loads(run("listen", "acme", "-o", str(out), "--quality", "phone", "--json"))
    assert listened["rate"] == 8000 and listened["quality"] == "phone"
    with wave.open(str(out)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768.0
    assert dominant_frequency(samples, 8000) == pytest.approx(660, abs=3)
    ulaw = next(r for r in replaced["renditions"] if r["format"] == "ulaw")
    assert len(samples) == ulaw["bytes"]  # sample for sample what a G.711 caller gets

    assert "disclaimer" in run("restore", "acme", code=1)  # the disclaimer is accepted anew
    restored = json.loads(run("restore", "acme", "--accept-disclaimer", "--by", "carol", "--json"))
    assert restored["file"]["original_name"] == "first.wav" and restored["disclaimer"]["accepted_by"] == "carol"
    assert restored["previous"]["original_name"] == "second.wav"
    run("listen", "acme", "-o", str(out))
    with wave.open(str(out)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768.0
    assert dominant_frequency(samples, 16000) == pytest.approx(440, abs=3)


def test_upload_a_webm_voice_over_the_default_music(tmp_path: Path) -> None:
    beds = tmp_path / "moh"
    beds.mkdir()
    tone(beds / "tune.wav", 300, seconds=3)
    voice = tmp_path / "voice.webm"  # as a browser records it: WebM/Opus
    ffmpeg("-f", "lavfi", "-i", "sine=f=1000:d=4", "-c:a", "libopus", "-b:a", "48k", "-f", "webm", str(voice))
    env = {"OOMA_MOH_MUSIC_BED_DEFAULT": str(beds)}
    home = ["--home", str(tmp_path / "home")]
    result = CliRunner().invoke(
        main, [*home, "upload", "acme", str(voice), "--bed", "default", "--accept-disclaimer", "--json"], env=env
    )
    assert result.exit_code == 0, result.output
    uploaded = json.loads(result.output)
    assert uploaded["file"]["original_name"] == "voice + music.wav"
    assert uploaded["file"]["duration_ms"] > 4000  # the voice plus the bed's intro and outro
    out = tmp_path / "heard.wav"
    assert CliRunner().invoke(main, [*home, "listen", "acme", "-o", str(out)]).exit_code == 0
    with wave.open(str(out)) as wav:
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2") / 32768.0
    spectrum = np.abs(np.fft.rfft(samples))
    freqs = np.fft.rfftfreq(len(samples), 1 / 16000)
    assert dominant_frequency(samples, 16000) == pytest.approx(1000, abs=3)
    assert spectrum[np.argmin(abs(freqs - 300))] > 0.02 * spectrum.max()  # the music under it
    bad = CliRunner().invoke(main, [*home, "upload", "acme", str(voice), "--bed", "jazz", "--accept-disclaimer"])
    assert bad.exit_code == 2  # a usage error


def test_hold_statistics_of_a_tenant_and_of_every_tenant(run: Run, tmp_path: Path) -> None:
    """``stats TENANT`` and ``stats --all`` read what the hold handlers wrote to the catalog: the
    API's figures for the tenant (``--json``), its days with holds as a table, every tenant's total."""
    assert "no catalog" in run("stats", "acme", code=1)  # reading never creates a home
    assert not (tmp_path / "home").exists()
    run("init")
    today = datetime.now(UTC).date()
    acme = {today - timedelta(days=ago): HoldDay(today - timedelta(days=ago)) for ago in (0, 5, 40)}
    for ago, lengths in ((0, (12.0, 30.0, 95.0)), (5, (7.0,)), (40, (600.0,))):
        for seconds in lengths:
            acme[today - timedelta(days=ago)].count(seconds, hung_up=seconds > 90, fallback=ago == 5)
    beta = HoldDay(today)
    beta.count(44.0, hung_up=False, fallback=False)
    catalog = open_catalog(load_settings(None, overrides={"home": str(tmp_path / "home")}))
    try:
        catalog.add_hold_days([*(("acme", d) for d in acme.values()), ("beta", beta)])
    finally:
        catalog.close()

    shown = json.loads(run("stats", "acme", "--json"))
    first, last = (date.fromisoformat(shown["days"][i]["date"]) for i in (0, -1))
    assert (last - first).days == 29 and last >= today  # the API's 30 days, today (UTC) included
    assert shown == summary(acme.values(), first, last)
    assert shown["total"]["holds"] == 4 and shown["total"]["hung_up"] == 1 and shown["total"]["fallback"] == 1
    table = run("stats", "acme").splitlines()
    assert table[0] == f"holds of acme in the last 30 days (UTC, {first} to {last})"
    assert table[1].split() == ["date", "holds", "on", "hold", "median", "s", "p90", "s", "hung", "up", "fallback"]
    rows = [line.split() for line in table[2:]]
    assert [row[0] for row in rows] == [str(today - timedelta(days=5)), str(today), "total"]  # days with holds
    assert rows[-1] == ["total", "4", "2:24", *(f"{shown['total'][k]:.1f}" for k in ("median_s", "p90_s")), "1", "1"]
    year = json.loads(run("stats", "acme", "--days", "400", "--json"))
    assert len(year["days"]) == 400 and year["total"]["holds"] == 5
    assert run("stats", "nobody").startswith("no holds for nobody in the last 30 days (UTC, ")

    every = json.loads(run("stats", "--all", "--json"))
    assert [t["tenant"] for t in every["tenants"]] == ["acme", "beta"]  # sorted, each with holds
    assert every["tenants"][0] == {"tenant": "acme", **shown["total"]}
    assert every["tenants"][1] == {"tenant": "beta", **beta.figures()}
    lines = run("stats", "--all", "--days", "1").splitlines()
    assert [line.split()[:2] for line in lines[2:]] == [["acme", "3"], ["beta", "1"]]
    assert run("stats", code=2) and "give TENANT or --all" in run("stats", "acme", "--all", code=2)
    assert "401 is not in the range" in run("stats", "acme", "--days", "401", code=2)
