"""The runtime does not depend on the lab, and the lab's demo does not depend on the CLI."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import ooma_moh


def modules_loaded_by(*names: str) -> set[str]:
    """The ``ooma_moh`` modules a fresh interpreter holds after importing ``names``."""
    code = (
        "import importlib, sys\n"
        f"for name in {list(names)!r}: importlib.import_module(name)\n"
        "print('\\n'.join(m for m in sys.modules if m.startswith('ooma_moh')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_no_runtime_module_imports_the_lab() -> None:
    runtime = [
        m.name
        for m in pkgutil.walk_packages(ooma_moh.__path__, "ooma_moh.")
        if not (m.name == "ooma_moh.lab" or m.name.startswith("ooma_moh.lab.")) and m.name != "ooma_moh.__main__"
    ]  # __main__ runs the CLI on import
    assert "ooma_moh.cli" in runtime and "ooma_moh.asterisk_conf" in runtime
    loaded = modules_loaded_by(*runtime)
    assert set(runtime) <= loaded
    assert not {m for m in loaded if m == "ooma_moh.lab" or m.startswith("ooma_moh.lab.")}


def test_demo_builds_its_objects_without_the_cli() -> None:
    loaded = modules_loaded_by("ooma_moh.lab.demo")
    assert "ooma_moh.app" in loaded and "ooma_moh.cli" not in loaded
