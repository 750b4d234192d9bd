"""Shared fixtures: an isolated data home per test and the service on the embedded back end."""

from __future__ import annotations

from pathlib import Path

import pytest

from ooma_moh.app import build_service
from ooma_moh.config import Settings
from ooma_moh.service import MohService


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose data directory is private to the test."""
    return Settings(home=tmp_path / "home")


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
