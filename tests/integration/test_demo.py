"""The README's main job: `ooma-moh demo` runs end to end against its own lab Asterisk."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ooma_moh.cli import main


def test_demo_passes_and_says_what_it_did(lab_root: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--keep", str(tmp_path / "demo")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("upload: tenant demo -> class tenant-demo") for line in lines)
    assert any("heard the 440 Hz tone in" in line and "class tenant-demo" in line for line in lines)
    assert lines[-1] == "demo passed: callers hear their tenant's music"
    assert (tmp_path / "demo" / "recordings" / "demo_tenant_demo.wav").stat().st_size > 44
