"""Which music goes under a voice (ooma_moh/beds.py): the default class's directory as Asterisk
plays it, and the mix request's checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from ooma_moh.beds import FORMATS, check_bed, default_bed
from ooma_moh.errors import BedUnavailable


def test_each_base_name_once_in_name_order_in_its_best_format(tmp_path: Path) -> None:
    for name in ("b-song.ulaw", "b-song.sln16", "a-song.gsm", "a-song.wav", "c.txt", "d-song.alaw"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub.wav").mkdir()  # a directory is not a file to play
    files = default_bed(tmp_path)
    assert [p.name for p, _ in files] == ["a-song.wav", "b-song.sln16", "d-song.alaw"]
    assert [options for _, options in files] == [FORMATS["wav"], FORMATS["sln16"], FORMATS["alaw"]]


def test_a_single_file_and_the_operators_mistakes(tmp_path: Path) -> None:
    one = tmp_path / "one.mp3"
    one.write_bytes(b"x")
    assert default_bed(one) == [(one, FORMATS["mp3"])]
    with pytest.raises(BedUnavailable, match="cannot be read"):
        default_bed(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BedUnavailable, match="no file ooma-moh can play"):
        default_bed(empty)


@pytest.mark.parametrize(
    ("bed", "level", "problem"),
    [
        ("jazz", -18, "bed must be"),
        ("default", "loud", "a number"),
        ("default", True, "a number"),
        ("current", 3, "between"),
    ],
)
def test_a_mix_request_is_checked(bed: object, level: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_bed(bed, level)
    assert check_bed("current", -40) == ("current", -40.0) and check_bed("default", 0) == ("default", 0.0)
