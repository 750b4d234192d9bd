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
