"""The MOH directory on a real, full file system (a small tmpfs; root only): a failure to place a
class's files is a StorageError with its reason code, never a raw OSError that would end the
agent, the partial build is removed, and what Asterisk reads is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ooma_moh.errors import StorageError
from ooma_moh.model import Rendition
from ooma_moh.mohdir import MohDirectory
from ooma_moh.storage.blobs import BlobStore
from tests.disk import fill, tmpfs


def test_a_full_disk_is_a_storage_error_and_leaves_nothing_behind(root: None, tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path / "blobs")
    source = tmp_path / "moh.sln16"
    source.write_bytes(os.urandom(256 * 1024))
    sha, size = blobs.put(source)
    renditions = (Rendition("sln16", 16000, size, sha),)
    with tmpfs(tmp_path / "moh", 1024 * 1024) as mount:  # another file system: a copy, not a hard link
        mohdir = MohDirectory(mount, blobs)
        assert mohdir.materialise("tenant-old", "v1", renditions) == 1  # what Asterisk plays now
        fill(mount, leave=64 * 1024)
        with pytest.raises(StorageError) as caught:
            mohdir.materialise("tenant-acme", "v2", renditions)
        assert caught.value.reason == "disk_full", caught.value
        assert "the server's disk is full" in str(caught.value) and "tenant-acme" in str(caught.value)
        assert not list((mount / "tenant-acme").glob(".partial-*"))  # the half-copied file is gone
        assert not (mount / "tenant-acme" / "v2").exists()
        assert mohdir.is_complete("tenant-old", "v1", renditions)


def test_a_file_where_a_class_directory_was_is_incomplete_and_a_storage_error(tmp_path: Path) -> None:
    """Found by the node checks: is_complete raised NotADirectoryError (untranslated, every sync
    failed with it); now the version reads incomplete and placing it is a StorageError."""
    blobs = BlobStore(tmp_path / "blobs")
    source = tmp_path / "moh.sln16"
    source.write_bytes(os.urandom(1000))
    sha, size = blobs.put(source)
    renditions = (Rendition("sln16", 16000, size, sha),)
    mohdir = MohDirectory(tmp_path / "moh", blobs)
    (tmp_path / "moh").mkdir()
    (tmp_path / "moh" / "tenant-acme").write_text("not a directory")
    assert not mohdir.is_complete("tenant-acme", "v1", renditions)
    with pytest.raises(StorageError):
        mohdir.materialise("tenant-acme", "v1", renditions)
