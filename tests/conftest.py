"""Shared fixtures: an isolated data home per test, on the back end the run was asked for.

``pytest`` runs on the embedded default (SQLite catalog, blobs in the home); ``pytest --backend
cluster`` runs the same tests with the catalog on PostgreSQL and the blobs in S3 object storage, each
test on a fresh database and a fresh bucket prefix (``scripts/test`` runs both). Tests about the
embedded files themselves (``embedded_only``) and tests of Asterisk's own behaviour that the back
end cannot change (``backend_neutral``) are deselected in the cluster run.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest

from ooma_moh.app import build_service, create_catalog
from ooma_moh.config import Settings
from ooma_moh.service import MohService

_PREFIXES = itertools.count(1)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--backend", choices=("embedded", "cluster"), default="embedded",
                     help="catalog and blob back end of the settings fixtures: embedded (SQLite + "
                          "local blobs) or cluster (PostgreSQL + S3 object storage)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "embedded_only: about the embedded SQLite catalog or local "
                                       "blob files themselves; deselected in the cluster run")
    config.addinivalue_line("markers", "backend_neutral: checks Asterisk's own behaviour once a class is "
                                       "published, which the back end cannot change (the route and "
                                       "publication on each back end are tested elsewhere); "
                                       "deselected in the cluster run")


def pytest_report_header(config: pytest.Config) -> str:
    return f"ooma-moh back end: {config.getoption('--backend')}"


#: The fixtures that put a test on the run's back end (``service``, ``lab_service``… use them).
BACKEND_FIXTURES = {"settings", "lab_settings"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The cluster run keeps the tests whose catalog and blobs follow the back end (they use
    :data:`BACKEND_FIXTURES`) and are not about the embedded files themselves: the others would
    only run a second time exactly as in the embedded run. Deselected, not skipped."""
    if config.getoption("--backend") != "cluster":
        return
    keep, dropped = [], []
    for item in items:
        follows = BACKEND_FIXTURES & set(getattr(item, "fixturenames", ()))
        neutral = item.get_closest_marker("embedded_only") or item.get_closest_marker("backend_neutral")
        (keep if follows and neutral is None else dropped).append(item)
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
    return {"database_url": server.database(), "blob_url": f"s3://{bucket}/t{next(_PREFIXES)}",
            "s3_endpoint_url": request.getfixturevalue("s3").endpoint}


def on_backend(request: pytest.FixtureRequest, **fields: Any) -> Settings:
    """Settings with ``fields`` on the run's back end; on the cluster one the schema is created
    first, as an operator's ``ooma-moh db upgrade`` does."""
    overrides = backend_overrides(request)
    settings = Settings(**fields, **overrides)
    if overrides:
        create_catalog(settings)
    return settings


@pytest.fixture
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings whose data directory (and, in the cluster run, database and bucket prefix) is
    private to the test."""
    return on_backend(request, home=tmp_path / "home")


@pytest.fixture
def service(settings: Settings) -> MohService:
    """The real service: SQLite catalog, blob store, restricted ffmpeg."""
    svc = build_service(settings)
    yield svc
    svc.catalog.close()


@pytest.fixture(scope="session")
def postgres():  # type: ignore[no-untyped-def]
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
def s3():  # type: ignore[no-untyped-def]
    """One throwaway SeaweedFS S3 server for the whole run (tests/s3server.py)."""
    from tests.s3server import s3_server

    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def cluster_bucket(s3) -> str:  # type: ignore[no-untyped-def]
    """The cluster run's bucket (each test has its own prefix in it), with the S3 credentials in
    this process's environment, so that child processes (CLI, servers, agents) find them too."""
    from tests.s3server import CREDENTIALS

    os.environ.update(CREDENTIALS)
    return s3.bucket()


@pytest.fixture
def s3_settings(s3, postgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:  # type: ignore[no-untyped-def]
    """A host of the cluster layout: catalog on PostgreSQL, blobs in a fresh S3 bucket (its home
    holds only the local cache)."""
    from ooma_moh.app import create_catalog
    from tests.s3server import CREDENTIALS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    settings = Settings(home=tmp_path / "host-a", database_url=postgres.database(),
                        blob_url=f"s3://{s3.bucket()}/moh", s3_endpoint_url=s3.endpoint)
    create_catalog(settings)
    return settings
