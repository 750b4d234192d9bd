"""The parts of ``ooma-moh doctor`` that need no Asterisk: its rules (ffmpeg's lists, permission
bits, modules, the probe audio and its comparison) and the MOH directory check on local files."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ooma_moh.config import Settings
from ooma_moh.doctor.findings import (
    FAIL,
    FFMPEG_NEEDS,
    OK,
    WARN,
    AsteriskUser,
    Finding,
    check_modules,
    exit_status,
    heard_verdict,
    lacking,
    missing_capabilities,
    parse_ffmpeg_list,
    probe_audio,
)
from ooma_moh.doctor.permissions import check_moh_dir


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ooma-moh-doctor-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path)


def test_permission_bits_are_judged_for_asterisks_user(open_dir: Path) -> None:
    root = open_dir / "moh"
    version = root / "tenant-acme" / "v1"
    version.mkdir(parents=True)
    (version / "moh.sln16").write_bytes(b"\0" * 64)
    for path in (root, root / "tenant-acme", version):
        os.chmod(path, 0o755)
    settings = Settings(home=open_dir, moh_dir=root)
    stranger = AsteriskUser(54321, frozenset({54321}), "uid 54321 (asterisk)")
    os.chmod(version / "moh.sln16", 0o640)  # owner root, group root: not for Asterisk
    finding = check_moh_dir(settings, stranger)[0]
    assert finding.status == "fail" and "moh.sln16 (mode 0640" in finding.found and "denies read" in finding.found
    in_group = AsteriskUser(54321, frozenset({54321, os.stat(version / "moh.sln16").st_gid}), "asterisk")
    assert check_moh_dir(settings, in_group)[0].status == "ok"
    os.chmod(version / "moh.sln16", 0o644)
    os.chmod(root, 0o750)
    assert check_moh_dir(settings, stranger)[0].status == "fail"
    assert stat.S_IMODE(os.stat(root).st_mode) == 0o750


def stat_of(mode: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


def test_lacking_picks_owner_group_or_other_bits() -> None:
    asterisk = AsteriskUser(100, frozenset({100, 200}))
    assert lacking(stat_of(stat.S_IFREG | 0o600, uid=100), asterisk, 6) == []
    assert lacking(stat_of(stat.S_IFREG | 0o604, uid=1, gid=200), asterisk, 4) == ["read"]  # group, not other
    assert lacking(stat_of(stat.S_IFDIR | 0o750, uid=1, gid=200), asterisk, 7) == ["write"]
    assert lacking(stat_of(stat.S_IFDIR | 0o700, uid=1, gid=1), asterisk, 5) == ["read", "search"]
    assert lacking(stat_of(stat.S_IFREG | 0o776), AsteriskUser(None), 1) == ["execute"]  # unknown user: other


def test_heard_verdict() -> None:
    audio = probe_audio(2.0)

    def be(data: bytes) -> bytes:
        return b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))

    assert heard_verdict(be(audio[6400 : 6400 + 32000]), audio)[0] == "match"
    assert heard_verdict(be(audio[6401 : 6401 + 32000]), audio)[0] == "other"  # off by a byte: not the file
    assert heard_verdict(b"\0" * 32000, audio)[0] == "silence"
    assert heard_verdict(be(probe_audio(2.0)[::-1]), audio)[0] == "other"


def test_parse_ffmpeg_list() -> None:
    listing = (
        " A....D g722                 G.722 ADPCM (codec adpcm_g722)\n"
        " D  mov,mp4,m4a,3gp,3g2,mj2 QuickTime / MOV\n D. = Demuxing supported\n"
        " T.C alimiter          A->A       Audio lookahead limiter.\n"
    )
    assert parse_ffmpeg_list(listing) == {"g722", "adpcm_g722", "mov", "mp4", "m4a", "3gp", "3g2", "mj2", "alimiter"}


def test_missing_capabilities_takes_any_alternative() -> None:
    have = {kind: {name.split("|")[-1] for name in names} for kind, names in FFMPEG_NEEDS.items()}
    assert missing_capabilities(have, FFMPEG_NEEDS) == []  # "mp3float|mp3": mp3 will do
    have["encoders"].discard("adpcm_g722")
    del have["filters"]
    missing = missing_capabilities(have, FFMPEG_NEEDS)
    assert "encoder adpcm_g722" in missing and "filter ebur128" in missing
    assert len(missing) == 1 + len(FFMPEG_NEEDS["filters"])


def test_modules_by_mode() -> None:
    static, realtime = Settings(publish_mode="static"), Settings(publish_mode="realtime")
    everything = {
        "res_musiconhold.so",
        "format_sln.so",
        "format_pcm.so",
        "func_channel.so",
        "res_stasis.so",
        "res_ari_channels.so",
        "res_ari_events.so",
        "res_http_websocket.so",
        "res_ari_bridges.so",
        "res_ari_applications.so",
        "res_agi.so",
    }
    assert check_modules(static, everything).status == OK
    no_sqlite = check_modules(realtime, everything)
    assert no_sqlite.status == FAIL and "res_config_sqlite3.so" in no_sqlite.found
    advised = check_modules(realtime, everything | {"res_config_sqlite3.so"})
    assert advised.status == WARN and "func_realtime.so" in advised.found


def test_exit_status_fails_only_on_a_failure() -> None:
    assert exit_status([Finding("a", OK, ""), Finding("b", WARN, "", "do")]) == 0
    assert exit_status([Finding("a", OK, ""), Finding("b", FAIL, "", "do")]) == 1
    assert Finding("b", FAIL, "broken", "fix it").line() == "FAIL b                broken To do: fix it"
