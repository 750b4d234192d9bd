"""Shared fixtures: an isolated data home per test, on the back end the run was asked for.

``pytest`` runs on the embedded default (SQLite catalog, blobs in the home); ``pytest --backend
cluster`` runs the same tests with the catalog on PostgreSQL and the blobs in S3 object storage, each
test on a fresh database and a fresh bucket prefix (``scripts/test`` runs both). Tests about the
embedded files themselves (``embedded_only``) and tests of Asterisk's own behaviour that the back
end cannot change (``backend_neutral``) are deselected in the cluster run.

Tiers: each test is marked from the fixtures it uses, directly or through other fixtures
(:data:`TIERS`): ``lab`` (a real Asterisk), ``browser`` (a real Chromium), ``cluster``
(PostgreSQL or S3), ``root`` (mounts, chroot, another uid). A test with none of them needs no
server and no privilege: ``pytest -m "not (lab or browser or cluster or root)"`` is the quick
tier (``scripts/test --quick``; docs/testing.md).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ooma_moh.app import build_service, create_catalog
from ooma_moh.config import Settings
from ooma_moh.service import MohService

if TYPE_CHECKING:  # imported by the fixtures themselves, only when a test uses them
    from tests.browser import Chromium
    from tests.postgres import PostgresServer
    from tests.s3server import S3Server

_PREFIXES = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backend",
        choices=("embedded", "cluster"),
        default="embedded",
        help="catalog and blob back end of the settings fixtures: embedded (SQLite + "
        "local blobs) or cluster (PostgreSQL + S3 object storage)",
    )


#: Tier marker -> the fixtures that put a test in it (pytest_collection_modifyitems).
TIERS: dict[str, set[str]] = {
    "lab": {"lab_root"},
    "browser": {"browser"},
    "cluster": {"postgres", "s3"},
    "root": {"root"},
}
TIER_HELP = {
    "lab": "starts or uses a real lab Asterisk (set from the lab_root fixture)",
    "browser": "drives a real headless Chromium (set from the browser fixture)",
    "cluster": "uses a real PostgreSQL or S3 server (set from the postgres/s3 fixtures, and on every "
    "test of the --backend cluster run)",
    "root": "needs root: mounts, chroot, another uid (set from the root fixture)",
}


def pytest_configure(config: pytest.Config) -> None:
    for marker, text in TIER_HELP.items():
        config.addinivalue_line("markers", f"{marker}: {text}")
    config.addinivalue_line(
        "markers",
        "every_backend: a call through the real Asterisk that the cluster run "
        "repeats on PostgreSQL + S3 (one ARI hold, one AGI call); every other "
        "lab test runs in the embedded run only",
    )
    config.addinivalue_line(
        "markers",
        "embedded_only: about the embedded SQLite catalog or local "
        "blob files themselves; deselected in the cluster run",
    )
    config.addinivalue_line(
        "markers",
        "backend_neutral: checks Asterisk's own behaviour once a class is "
        "published, which the back end cannot change (the route and "
        "publication on each back end are tested elsewhere); "
        "deselected in the cluster run",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"ooma-moh back end: {config.getoption('--backend')}"


#: The fixtures that put a test on the run's back end (``service``, ``lab_service``… use them).
BACKEND_FIXTURES = {"settings", "lab_settings"}


def tiers_of(item: pytest.Item, backend: str) -> set[str]:
    """The tier markers ``item`` gets from the fixtures it uses (:data:`TIERS`); in the cluster
    run every test on the back end is ``cluster`` too, and ``backend_settings[postgresql]``
    reaches PostgreSQL through ``getfixturevalue``."""
    fixtures = set(getattr(item, "fixturenames", ()))
    found = {marker for marker, names in TIERS.items() if names & fixtures}
    callspec = getattr(item, "callspec", None)
    if callspec is not None and callspec.params.get("backend_settings") == "postgresql":
        found.add("cluster")
    if backend == "cluster" and BACKEND_FIXTURES & fixtures:
        found.add("cluster")
    return found


def runs_on_cluster(item: pytest.Item) -> bool:
    """Whether the cluster run keeps ``item``: its catalog and blobs follow the back end (it uses
    :data:`BACKEND_FIXTURES`), it is not about the embedded files themselves nor about
    Asterisk's own behaviour, and if it calls through the lab Asterisk it is one of the calls
    marked ``every_backend`` (the route through Asterisk is the same on either back end)."""
    fixtures = set(getattr(item, "fixturenames", ()))
    if not BACKEND_FIXTURES & fixtures:
        return False
    if item.get_closest_marker("embedded_only") or item.get_closest_marker("backend_neutral"):
        return False
    return "lab_root" not in fixtures or item.get_closest_marker("every_backend") is not None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Marks every test with its tiers (:func:`tiers_of`). The cluster run keeps only the tests
    :func:`runs_on_cluster` says: the others would run a second time exactly as in the embedded
    run. Deselected, not skipped."""
    backend = config.getoption("--backend")
    for item in items:
        for marker in sorted(tiers_of(item, backend)):
            item.add_marker(marker)
    if backend != "cluster":
        return
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        (keep if runs_on_cluster(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


def backend_overrides(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings fields that put a test on the run's back end: none on the embedded one; on the
    cluster one a fresh PostgreSQL database and a fresh prefix in the session's bucket."""
    if request.config.getoption("--backend") != "cluster":
        return {}
    server = request.getfixturevalue("postgres")
    bucket = request.getfixturevalue("cluster_bucket")
    return {
        "database_url": server.database(),
        "blob_url": f"s3://{bucket}/t{next(_PREFIXES)}",
        "s3_endpoint_url": request.getfixturevalue("s3").endpoint,
    }


def on_backend(request: pytest.FixtureRequest, **fields: Any) -> Settings:
    """Settings with ``fields`` on the run's back end; on the cluster one the schema is created
    first, as an operator's ``ooma-moh db upgrade`` does."""
    overrides = backend_overrides(request)
    settings = Settings(**fields, **overrides)
    if overrides:
        create_catalog(settings)
    return settings


@pytest.fixture(scope="session")
def root() -> None:
    """For a test that needs root (mounts a tmpfs, a chroot, runs as another uid): marks it
    ``root`` and fails it at once, with the reason, for anyone else."""
    if os.geteuid() != 0:
        pytest.fail(
            "needs root (mounts, chroot or another uid): run it as root, or leave the root tier out with -m 'not root'"
        )


@pytest.fixture
def browser() -> Chromium:
    """A real headless Chromium: ``with browser(lang) as driver`` (tests/browser.py)."""
    from tests.browser import chromium

    return chromium


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings whose data directory (and, in the cluster run, database and bucket prefix) is
    private to the test."""
    return on_backend(request, home=tmp_path / "home")


@pytest.fixture
def service(settings: Settings) -> Iterator[MohService]:
    """The real service: SQLite catalog, blob store, restricted ffmpeg."""
    svc = build_service(settings)
    yield svc
    svc.catalog.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the whole run (tests/postgres.py)."""
    from tests.postgres import postgres_server

    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings on each catalog back end in turn: the home's SQLite file, then a fresh
    PostgreSQL database (schema created as `ooma-moh db upgrade` does)."""
    if request.param == "sqlite":
        return Settings(home=tmp_path / "home")
    from ooma_moh.app import create_catalog

    server = request.getfixturevalue("postgres")
    settings = Settings(home=tmp_path / "home", database_url=server.database())
    create_catalog(settings)
    return settings


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One throwaway SeaweedFS S3 server for the whole run (tests/s3server.py)."""
    from tests.s3server import s3_server

    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_bucket(s3: S3Server) -> str:
    """The cluster run's bucket (each test has its own prefix in it), with the S3 credentials in
    this process's environment, so that child processes (CLI, servers, agents) find them too."""
    from tests.s3server import CREDENTIALS

    os.environ.update(CREDENTIALS)
    return s3.bucket()


@pytest.fixture
def s3_settings(s3: S3Server, postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """A host of the cluster layout: catalog on PostgreSQL, blobs in a fresh S3 bucket (its home
    holds only the local cache)."""
    from ooma_moh.app import create_catalog
    from tests.s3server import CREDENTIALS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(
        home=tmp_path / "host-a",
        database_url=postgres.database(),
        blob_url=f"s3://{s3.bucket()}/moh",
        s3_endpoint_url=s3.endpoint,
    )
    create_catalog(settings)
    return settings
