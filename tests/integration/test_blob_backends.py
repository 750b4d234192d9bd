"""Blobs in object storage: a real SeaweedFS S3 server and a real PostgreSQL, started by the
suite. Two hosts share the catalog and the bucket; each keeps its own local cache."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from pathlib import Path

import pytest

from ooma_moh.app import build_service, build_syncer, open_blobs
from ooma_moh.config import Settings
from ooma_moh.errors import StorageError
from ooma_moh.model import TenantMoh
from ooma_moh.storage.blobs import sha256_file
from ooma_moh.storage.s3 import MIN_AGE_S, S3BlobStore
from tests.audio import tone
from tests.postgres import PostgresServer
from tests.s3server import S3Server


def upload_tone(settings: Settings, tenant: str, freq: float, tmp_path: Path, seconds: float = 3) -> TenantMoh:
    """Upload a ``seconds`` s MP3 tone for ``tenant`` as a host with ``settings`` would."""
    service = build_service(settings)
    try:
        return service.upload(
            tenant,
            tone(tmp_path / f"{tenant}-{freq:g}-{seconds:g}.mp3", freq, seconds, "mp3"),
            accept_disclaimer=True,
            accepted_by="admin",
        )
    finally:
        service.catalog.close()


def keys(s3: S3Server, settings: Settings) -> set[str]:
    bucket = settings.blob_url.split("/")[2]
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def test_an_upload_on_one_host_is_published_from_another(s3: S3Server, s3_settings: Settings, tmp_path: Path) -> None:
    tenant = upload_tone(s3_settings, "acme", 440, tmp_path)
    assert tenant.upload is not None
    stored = keys(s3, s3_settings)
    assert stored == {f"moh/{s[:2]}/{s}" for s in [tenant.upload.sha256, *(r.sha256 for r in tenant.renditions)]}
    # host B: same catalog and bucket, its own (empty) home and MOH directory
    host_b = dataclasses.replace(s3_settings, home=tmp_path / "host-b")
    service_b = build_service(host_b)
    try:
        build_syncer(host_b, service_b).run(None)
    finally:
        service_b.catalog.close()
    published = list((host_b.moh_dir / "tenant-acme").rglob("*.sln16"))
    assert len(published) == 1 and sha256_file(published[0]) == tenant.rendition("sln16").sha256
    for rendition in tenant.renditions:  # every file host B plays came down whole and checked
        assert (host_b.blob_dir / rendition.sha256[:2] / rendition.sha256).is_file()


def test_a_damaged_object_never_reaches_the_cache(s3: S3Server, s3_settings: Settings, tmp_path: Path) -> None:
    tenant = upload_tone(s3_settings, "acme", 440, tmp_path)
    sha = tenant.rendition("ulaw").sha256
    bucket = s3_settings.blob_url.split("/")[2]
    s3.client().put_object(Bucket=bucket, Key=f"moh/{sha[:2]}/{sha}", Body=b"\x00" * 100)  # bit rot
    cold = open_blobs(dataclasses.replace(s3_settings, home=tmp_path / "cold"))
    with pytest.raises(StorageError) as caught:
        cold.locate(sha)
    assert caught.value.reason == "blob_damaged"
    assert not cold.path(sha).exists()
    assert not any((tmp_path / "cold" / "blobs" / "tmp").iterdir())


def test_a_catch_up_stores_what_it_fetched_only_once_settled(
    s3: S3Server, s3_settings: Settings, tmp_path: Path
) -> None:
    """A catch-up's downloads (``fetching()``) wait, checked, in a scratch directory until
    ``settle()`` makes them durable in one commit and names them in the cache; a damaged object
    fails its fetch; what was not settled is gone when the catch-up ends."""
    tenant = upload_tone(s3_settings, "acme", 440, tmp_path)
    good, damaged, unsettled = (tenant.rendition(e).sha256 for e in ("ulaw", "alaw", "sln16"))
    bucket = s3_settings.blob_url.split("/")[2]
    s3.client().put_object(Bucket=bucket, Key=f"moh/{damaged[:2]}/{damaged}", Body=b"\x00" * 100)
    cold = open_blobs(dataclasses.replace(s3_settings, home=tmp_path / "cold"))
    scratch = tmp_path / "cold" / "blobs" / "tmp"
    with cold.fetching() as fetcher:
        fetcher.fetch(good)
        assert not cold.path(good).exists()  # downloaded, not yet durable: no name in the cache
        with pytest.raises(StorageError) as caught:
            fetcher.fetch(damaged)
        assert caught.value.reason == "blob_damaged"
        fetcher.settle()
        assert sha256_file(cold.path(good)) == good
        fetcher.fetch(unsettled)
    assert not cold.path(damaged).exists() and not cold.path(unsettled).exists()
    assert not any(scratch.iterdir())


def test_clean_up_trashes_then_deletes_and_a_restored_catalog_gets_its_objects_back(
    s3: S3Server, s3_settings: Settings, tmp_path: Path
) -> None:
    blobs = open_blobs(s3_settings)
    assert isinstance(blobs, S3BlobStore)
    with blobs.scratch() as work:
        (work / "x").write_bytes(b"an old rendition" * 1000)
        sha, _ = blobs.put(work / "x")
    now = time.time()
    assert blobs.collect(lambda: set(), now) == 0  # younger than MIN_AGE_S: an upload may be committing
    assert blobs.collect(lambda: set(), now + MIN_AGE_S + 60) == 1
    assert keys(s3, s3_settings) == {f"moh/trash/{sha}"}
    cold = open_blobs(dataclasses.replace(s3_settings, home=tmp_path / "cold"))
    assert cold.read(sha) == b"an old rendition" * 1000  # a restored catalog still finds it ...
    assert f"moh/{sha[:2]}/{sha}" in keys(s3, s3_settings)  # ... and brings it back
    blobs.collect(lambda: set(), now + 2 * MIN_AGE_S)
    blobs.collect(lambda: set(), now + 2 * MIN_AGE_S + s3_settings.blob_grace_s + 60)
    assert keys(s3, s3_settings) == set()


class CuttingProxy:
    """A TCP proxy to the S3 server that cuts every response after ``limit`` bytes: a download
    broken in the middle, on the real network path."""

    def __init__(self, target: int, limit: int) -> None:
        self.target, self.limit = target, limit
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))

        def pump_up() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=pump_up, daemon=True).start()
        sent = 0
        try:
            while sent < self.limit and (data := upstream.recv(65536)):
                client.sendall(data[: self.limit - sent])
                sent += len(data)
        except OSError:
            pass
        finally:
            for sock in (client, upstream):  # shutdown first: a FIN now, even with a recv pending
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self.server.close()


def test_a_download_cut_in_the_middle_leaves_nothing_behind(
    s3: S3Server, s3_settings: Settings, tmp_path: Path
) -> None:
    tenant = upload_tone(s3_settings, "acme", 440, tmp_path, seconds=20)
    sha = tenant.rendition("sln16").sha256  # 640 kB
    proxy = CuttingProxy(int(s3.endpoint.rsplit(":", 1)[1]), 200_000)
    try:
        cut = open_blobs(
            dataclasses.replace(s3_settings, home=tmp_path / "cut", s3_endpoint_url=f"http://127.0.0.1:{proxy.port}")
        )
        with pytest.raises(StorageError) as caught:
            cut.locate(sha)
        assert caught.value.reason in ("blob_store_unreachable", "blob_store_error", "blob_damaged"), caught.value
        assert not cut.path(sha).exists()
        assert not any((tmp_path / "cut" / "blobs" / "tmp").iterdir())
    finally:
        proxy.close()
    whole = open_blobs(dataclasses.replace(s3_settings, home=tmp_path / "cut"))
    assert sha256_file(whole.locate(sha)) == sha  # the same cache, once the network is whole


def test_object_storage_down_fails_uploads_clearly_and_changes_nothing(
    postgres: PostgresServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ooma_moh.app import create_catalog
    from tests.s3server import CREDENTIALS

    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    own = S3Server().start()  # its own server: this test stops it
    try:
        settings = Settings(
            home=tmp_path / "host",
            database_url=postgres.database(),
            blob_url=f"s3://{own.bucket()}/moh",
            s3_endpoint_url=own.endpoint,
        )
        create_catalog(settings)
        service = build_service(settings)
        try:
            first = service.upload(
                "acme", tone(tmp_path / "a.mp3", 440, 3, "mp3"), accept_disclaimer=True, accepted_by="alice"
            )
            assert first.upload is not None
            own.stop()
            with pytest.raises(StorageError) as caught:
                service.upload(
                    "acme", tone(tmp_path / "b.mp3", 660, 3, "mp3"), accept_disclaimer=True, accepted_by="bob"
                )
            assert caught.value.reason == "blob_store_unreachable", caught.value
            assert "nothing was changed" in str(caught.value)
            assert service.catalog.get("acme") == first  # the tenant's music as it was
            own.start()
            second = service.upload(
                "acme", tone(tmp_path / "b.mp3", 660, 3, "mp3"), accept_disclaimer=True, accepted_by="bob"
            )
            assert second.upload is not None and second.upload.sha256 != first.upload.sha256
        finally:
            service.catalog.close()
    finally:
        own.close()
