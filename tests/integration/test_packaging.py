"""The built wheel, installed in a fresh venv, has what an operator needs and none of the tests.

The wheel is built the way a user builds it (``pip wheel``, with build isolation, so the
``[build-system]`` of pyproject.toml is what builds it) from a copy of the work tree: building in
place would leave ``build/`` and ``*.egg-info`` in the repository, and a stale ``build/lib`` can
put modules that no longer exist into the wheel. It is installed with ``--no-deps --no-index``
into a venv made for the test. The runtime dependencies (click, aiohttp, ...) are not what is
under test and the machine may be offline, so that venv sees them through a ``.pth`` line naming
the project venv's site-packages; such a line adds the directory only, without running the
``.pth`` files in it, so the project's editable install is not active there — a test below checks
that ``ooma_moh`` is imported from the fresh venv.
"""

from __future__ import annotations

import json
import shutil
import site
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from tests.unit.test_deploy_files import OPERATORS_FILES

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "ooma_moh" / "asterisk_conf"
OPERATOR_FILES = {
    "ari.conf",
    "extconfig.conf",
    "extensions.conf",
    "http.conf",
    "musiconhold.conf",
    "pjsip.conf",
    "res_config_sqlite3.conf",
}
DEPLOY = REPO / "ooma_moh" / "deploy"
#: what `ooma-moh deploy-files` must write: every file of ooma_moh/deploy but its Python module
DEPLOY_FILES = {
    p.relative_to(DEPLOY).as_posix()
    for p in DEPLOY.rglob("*")
    if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
}


@dataclass
class Installed:
    """The wheel and the venv it was installed into."""

    wheel: Path
    venv: Path

    def run(self, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """Run a program of the venv's ``bin/`` (from ``cwd``, never the repository)."""
        return subprocess.run(
            [str(self.venv / "bin" / argv[0]), *argv[1:]],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    """Build the wheel and install it into a fresh venv."""
    tmp = tmp_path_factory.mktemp("packaging")
    source, dist, venv = tmp / "source", tmp / "dist", tmp / "venv"
    shutil.copytree(
        REPO,
        source,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", ".lab", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache"
        ),
    )
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = dist.glob("ooma_moh-*.whl")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The project venv's pip installs into the fresh venv (which has no pip of its own).
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(purelib) / "ooma_moh_test_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    return Installed(wheel, venv)


def test_wheel_holds_the_package_and_its_configuration_and_no_tests(installed: Installed) -> None:
    names = zipfile.ZipFile(installed.wheel).namelist()
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert {name.split("/")[0] for name in names} == {"ooma_moh", f"ooma_moh-{version}.dist-info"}
    assert not [n for n in names if "/tests/" in n or "conftest" in n or Path(n).name.startswith("test_")]
    shipped = {Path(n).name for n in names if n.startswith("ooma_moh/asterisk_conf/") and n.endswith(".conf")}
    assert shipped == OPERATOR_FILES == {p.name for p in SAMPLES.glob("*.conf")}
    templates = {Path(n).name for n in names if n.startswith("ooma_moh/lab/conf/")}
    assert templates == {p.name for p in (REPO / "ooma_moh" / "lab" / "conf").glob("*.conf")}
    deploy = {n.removeprefix("ooma_moh/deploy/") for n in names if n.startswith("ooma_moh/deploy/")}
    assert deploy - {"__init__.py"} == DEPLOY_FILES
    assert OPERATORS_FILES <= DEPLOY_FILES


def test_wheel_declares_the_dependencies_of_pyproject(installed: Installed) -> None:
    with zipfile.ZipFile(installed.wheel) as wheel:
        metadata = wheel.read(next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    required = {
        line.split(":", 1)[1].strip()
        for line in metadata.splitlines()
        if line.startswith("Requires-Dist:") and "extra ==" not in line
    }
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert {str(Requirement(r)) for r in required} == {str(Requirement(r)) for r in declared}


def test_installed_commands_run_from_the_fresh_venv(installed: Installed, tmp_path: Path) -> None:
    where = installed.run("python", "-c", "import ooma_moh; print(ooma_moh.__file__)", cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    assert Path(where.stdout.strip()).is_relative_to(installed.venv), where.stdout
    helped = installed.run("ooma-moh", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "asterisk-conf" in helped.stdout and "deploy-files" in helped.stdout and "upload" in helped.stdout
    assert (installed.venv / "bin" / "ooma-moh-agi").exists()


def test_asterisk_conf_writes_the_repository_files(installed: Installed, tmp_path: Path) -> None:
    dest = tmp_path / "etc-asterisk"
    wrote = installed.run("ooma-moh", "asterisk-conf", "--dest", str(dest), "--json", cwd=tmp_path)
    assert wrote.returncode == 0, wrote.stderr
    assert {Path(p).name for p in json.loads(wrote.stdout)["written"]} == OPERATOR_FILES
    assert {p.name for p in dest.iterdir()} == OPERATOR_FILES
    for name in OPERATOR_FILES:
        assert (dest / name).read_bytes() == (SAMPLES / name).read_bytes(), name
    again = installed.run("ooma-moh", "asterisk-conf", "--dest", str(dest), cwd=tmp_path)
    assert again.returncode == 1 and "already exist" in again.stderr


def test_deploy_files_writes_the_repository_files(installed: Installed, tmp_path: Path) -> None:
    """Run from the installed wheel, far from any checkout: the units, sysusers.d, tmpfiles.d, env
    example, drop-in, alerting rules and dashboard, byte for byte as in the repository."""
    dest = tmp_path / "deploy"
    wrote = installed.run("ooma-moh", "deploy-files", "--dest", str(dest), "--json", cwd=tmp_path)
    assert wrote.returncode == 0, wrote.stderr
    written = {Path(p).relative_to(dest).as_posix() for p in json.loads(wrote.stdout)["written"]}
    assert written == DEPLOY_FILES == {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    for name in DEPLOY_FILES:
        assert (dest / name).read_bytes() == (DEPLOY / name).read_bytes(), name
    again = installed.run("ooma-moh", "deploy-files", "--dest", str(dest), cwd=tmp_path)
    assert again.returncode == 1 and "already exist" in again.stderr


def test_lab_configuration_renders_from_the_installed_package(installed: Installed, tmp_path: Path) -> None:
    # The lab's templates are package data too: read through importlib.resources from
    # site-packages, not from the work tree.
    script = (
        "from pathlib import Path; from ooma_moh.lab import render_config\n"
        "p = Path('/srv/lab')\n"
        "c = render_config(shared=p, etc=p / 'etc', moddir='/usr/lib/x/asterisk/modules', home=p / 'home',"
        " default_moh=p / 'moh', talk_moh=p / 'talk', recordings=p / 'rec', ari_password='pw',"
        " http_port=18088, sip_port=15060)\n"
        "import json; print(json.dumps(c))"
    )
    rendered = installed.run("python", "-c", script, cwd=tmp_path)
    assert rendered.returncode == 0, rendered.stderr
    config = json.loads(rendered.stdout)
    assert set(config) == OPERATOR_FILES | {
        "asterisk.conf",
        "logger.conf",
        "modules.conf",
        "res_parking.conf",
        "queues.conf",
        "features.conf",
    }
    assert "contact=sip:lab-loop@127.0.0.1:15060" in config["pjsip.conf"]
    assert "bind=127.0.0.1:15060" in config["pjsip.conf"]
    assert "Record(/srv/lab/rec/${NAME}.wav," in config["extensions.conf"]
