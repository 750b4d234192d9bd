"""The catalog's contract on both back ends — the embedded SQLite file and a real PostgreSQL
server started by the suite — plus what only PostgreSQL has: versioned schema, concurrent hosts,
a server that goes away and comes back."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from ooma_moh.app import build_service, create_catalog, open_catalog
from ooma_moh.config import Settings
from ooma_moh.errors import CatalogMissing, StorageError
from ooma_moh.holdstats import HoldDay, bucket_of
from ooma_moh.http.logins import check_session, create_login_link, redeem_login_link
from ooma_moh.http.tokens import check_token, create_token
from ooma_moh.model import Disclaimer, MohSetting, Rendition, TenantMoh, UploadedFile
from ooma_moh.storage import Catalog
from ooma_moh.storage import postgres_db as pg
from ooma_moh.storage.postgres import PostgresCatalog
from tests.audio import tone
from tests.postgres import PostgresServer, wait_until_down
from tests.unit import test_catalog_contract as contract

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def fake_upload(n: int, at: datetime) -> tuple[UploadedFile, Disclaimer, tuple[Rendition, ...]]:
    sha = f"{n:064x}"
    return (
        UploadedFile(f"f{n}.mp3", 1000 + n, sha, 3000, "mp3", at),
        Disclaimer("tester", at, sha, "v1"),
        (Rendition("sln", 8000, 48000, f"{n + 10**6:064x}"), Rendition("ulaw", 8000, 24000, f"{n + 2 * 10**6:064x}")),
    )


def test_upload_replace_delete_and_audit(backend_settings: Settings, tmp_path: Path) -> None:
    """The real service (ffmpeg, blobs) on each catalog."""
    service = build_service(backend_settings)
    try:
        first = service.upload(
            "acme", tone(tmp_path / "a.mp3", 440, 3, "mp3"), accept_disclaimer=True, accepted_by="alice"
        )
        assert first.setting is MohSetting.FILE and len(first.renditions) == 5
        assert first.disclaimer is not None and first.disclaimer.text_version
        second = service.upload(
            "acme", tone(tmp_path / "b.mp3", 660, 3, "mp3"), accept_disclaimer=True, accepted_by="bob"
        )
        assert second.upload is not None and first.upload is not None and second.upload.sha256 != first.upload.sha256
        assert service.catalog.get("acme") == second
        assert [t.tenant_id for t in service.catalog.list()] == ["acme"]
        blobs = {r.sha256 for r in second.renditions} | {second.upload.sha256}
        blobs_first = {r.sha256 for r in first.renditions} | {first.upload.sha256}
        assert blobs | blobs_first == service.catalog.referenced_blobs()  # the replaced file is kept
        assert second.previous == first.upload and second.upload.analysis is not None
        service.delete("acme")
        after = service.catalog.get("acme")
        assert after is not None and after.setting is MohSetting.DEFAULT and after.upload is None
        assert service.catalog.referenced_blobs() == blobs and after.previous == second.upload
        audit = service.catalog.audit("acme")
        assert [e.action for e in audit] == ["upload", "upload", "delete"]
        assert audit[1].detail["replaced_upload"] == first.upload.sha256 and audit[1].detail["accepted_by"] == "bob"
        assert audit[0].at.tzinfo is not None
    finally:
        service.catalog.close()


@pytest.mark.parametrize(
    "scenario",
    [
        contract.test_restore_brings_back_the_previous_file_and_twice_comes_back,
        contract.test_drafts_are_the_tenants_own_bounded_and_expire,
        contract.test_hold_days_are_only_added_to_and_merge_across_writers,
    ],
    ids=["restore", "drafts", "hold-days"],
)
def test_previous_restore_and_drafts_keep_the_contract(
    backend_settings: Settings, scenario: Callable[[Catalog], None]
) -> None:
    """The contract scenarios of tests/unit/test_catalog_contract.py on this back end."""
    catalog = open_catalog(backend_settings)
    try:
        scenario(catalog)
    finally:
        catalog.close()


def test_tokens_endpoints_links_and_sessions(backend_settings: Settings) -> None:
    catalog = open_catalog(backend_settings)
    try:
        token, bearer = create_token(catalog, tenant_id="acme", now=T0)
        assert check_token(catalog, bearer) == token and catalog.tokens() == [token]
        assert catalog.revoke_token(token.id, T0) and not catalog.revoke_token(token.id, T0)
        assert check_token(catalog, bearer) is None
        catalog.map_endpoint("PJSIP/acme-100", "acme")
        catalog.map_endpoint("PJSIP/acme-100", "acme2")
        assert catalog.endpoint_tenant("PJSIP/acme-100") == "acme2"
        assert catalog.endpoints() == {"PJSIP/acme-100": "acme2"}
        catalog.map_endpoint("PJSIP/acme-100", None)
        assert catalog.endpoints() == {}
        link, credential = create_login_link(
            catalog, tenant_id="acme", label="Camille", now=T0, ttl=timedelta(minutes=15)
        )
        assert catalog.open_sign_ins(T0)[0] == [link]
        session, cookie, refusal = redeem_login_link(catalog, credential, T0 + timedelta(minutes=1), timedelta(hours=8))
        assert session is not None and refusal is None
        assert check_session(catalog, cookie, T0 + timedelta(hours=1)) == session
        assert redeem_login_link(catalog, credential, T0 + timedelta(minutes=2), timedelta(hours=8))[2] == "used"
        assert catalog.sign_out_tenant("acme", T0 + timedelta(hours=2)) == (0, 1)
        assert check_session(catalog, cookie, T0 + timedelta(hours=3)) is None
    finally:
        catalog.close()


def test_two_hosts_changing_one_tenant_at_once_end_consistent(backend_settings: Settings) -> None:
    """Each thread is a separate host with its own connection: 2 x 15 uploads and deletes for
    one tenant at once. At the end the tenant points at exactly one upload (or none) and one
    previous one, and no upload row of it is left dangling."""
    errors: list[BaseException] = []

    def host(offset: int) -> None:
        catalog = open_catalog(backend_settings)
        try:
            for i in range(15):
                n = offset + i
                if i % 5 == 4:
                    catalog.set_default("acme", T0 + timedelta(seconds=n))
                else:
                    catalog.save_upload("acme", *fake_upload(n, T0 + timedelta(seconds=n)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            catalog.close()

    threads = [threading.Thread(target=host, args=(k * 100,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    catalog = open_catalog(backend_settings, writable=False)
    try:
        tenant = catalog.get("acme")
        assert tenant is not None
        held = {tenant.upload.sha256, *(r.sha256 for r in tenant.renditions)} if tenant.upload else set()
        assert tenant.previous is not None  # 30 changes: the last one replaced or removed a file
        numbers = {int(sha, 16) for sha in catalog.referenced_blobs()} - {int(sha, 16) for sha in held}
        n = int(tenant.previous.sha256, 16)
        assert numbers == {n, n + 10**6, n + 2 * 10**6}  # exactly the current and the previous upload's blobs
        assert len(catalog.audit("acme")) == 30
    finally:
        catalog.close()


def test_two_handlers_adding_hold_days_at_once_lose_nothing(backend_settings: Settings) -> None:
    """Two hosts' `serve ari` writing one tenant's day at the same moments (20 writes each, the
    same rows in opposite orders): every hold counted, no deadlock, no lost update."""
    day, errors = T0.date(), list[BaseException]()

    def handler(tenants: list[str]) -> None:
        catalog = open_catalog(backend_settings)
        try:
            for _ in range(20):
                rows = []
                for tenant in tenants:
                    figures = HoldDay(day)
                    figures.count(3.0, hung_up=True, fallback=False)
                    rows.append((tenant, figures))
                catalog.add_hold_days(rows)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            catalog.close()

    threads = [threading.Thread(target=handler, args=(order,)) for order in (["a", "b"], ["b", "a"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    catalog = open_catalog(backend_settings, writable=False)
    try:
        for tenant in ("a", "b"):
            (figures,) = catalog.hold_days(tenant, day, day)
            assert (figures.holds, figures.hung_up, figures.buckets) == (40, 40, {bucket_of(3.0): 40})
            assert figures.seconds == 120.0
    finally:
        catalog.close()


def test_a_tenant_read_while_another_host_replaces_its_upload_is_whole(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tenant is read in several statements (its row, then its upload's): another host that
    deletes the upload between them is not seen half — the reader gets the tenant as it was,
    never an error (under load this raised ValueError from a missing upload row). PostgreSQL
    only: on SQLite's rollback journal the writer cannot commit while the read holds its lock
    (here, in the same thread, it would wait out the busy timeout)."""
    settings = Settings(home=tmp_path / "home", database_url=postgres.database())
    create_catalog(settings)
    reader, other = open_catalog(settings), open_catalog(settings)
    try:
        reader.save_upload("acme", *fake_upload(1, T0))
        assert isinstance(reader, PostgresCatalog)  # database_url is PostgreSQL's
        read = reader._query
        interleaved: list[TenantMoh | None] = []

        def query(sql: str, params: tuple[object, ...] = ()) -> list[dict[str, Any]]:
            rows = read(sql, params)
            if "FROM tenants" in sql and not interleaved:  # between the tenant's row and its upload's
                interleaved.append(other.set_default("acme", T0 + timedelta(seconds=1)))
            return rows

        monkeypatch.setattr(reader, "_query", query)
        tenant = reader.get("acme")
        assert interleaved and interleaved[0] is not None and interleaved[0].setting is MohSetting.DEFAULT
        assert tenant is not None and tenant.setting is MohSetting.FILE and tenant.upload is not None
        monkeypatch.undo()
        after = reader.get("acme")
        assert after is not None and after.setting is MohSetting.DEFAULT  # the next read: the change
    finally:
        reader.close()
        other.close()


def test_a_link_opens_one_session_however_many_hosts_redeem_it(backend_settings: Settings) -> None:
    catalog = open_catalog(backend_settings)
    _, credential = create_login_link(catalog, tenant_id="acme", label="x", now=T0, ttl=timedelta(minutes=15))
    catalog.close()
    wins: list[bool] = []

    def host() -> None:
        own = open_catalog(backend_settings)
        try:
            session, _, _ = redeem_login_link(own, credential, T0 + timedelta(seconds=1), timedelta(hours=1))
            wins.append(session is not None)
        finally:
            own.close()

    threads = [threading.Thread(target=host) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == [False] * 7 + [True]


# -- PostgreSQL only -------------------------------------------------------------------------


@pytest.fixture
def fresh_database(postgres: PostgresServer, tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", database_url=postgres.database())


def test_schema_is_made_only_by_db_upgrade(fresh_database: Settings) -> None:
    with pytest.raises(CatalogMissing, match="db upgrade"):
        open_catalog(fresh_database)  # a writer never creates a shared schema by itself
    with pytest.raises(CatalogMissing, match="db upgrade"):
        open_catalog(fresh_database, writable=False)
    results: list[list[int]] = []
    threads = [threading.Thread(target=lambda: results.append(create_catalog(fresh_database))) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    applied = sorted(v for r in results for v in r)
    assert applied == [v for v, _ in pg.migrations()]  # each version once, across three hosts
    assert create_catalog(fresh_database) == []  # idempotent
    assert pg.schema_version(fresh_database.database_url) == pg.LATEST
    open_catalog(fresh_database).close()


def test_a_schema_from_a_newer_release_is_refused_with_what_to_do(fresh_database: Settings) -> None:
    """Another host upgraded the database: this older ooma-moh must not write into a schema it
    does not know."""
    create_catalog(fresh_database)
    with psycopg.connect(fresh_database.database_url, autocommit=True) as db:
        db.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (pg.LATEST + 1,))
    with pytest.raises(StorageError, match="newer than this ooma-moh knows .*: upgrade ooma-moh") as caught:
        open_catalog(fresh_database)
    assert caught.value.reason == "schema_newer"


def test_a_reader_cannot_write(fresh_database: Settings) -> None:
    create_catalog(fresh_database)
    reader = open_catalog(fresh_database, writable=False)
    try:
        with pytest.raises(StorageError) as caught:
            reader.map_endpoint("PJSIP/x", "acme")
        assert caught.value.reason == "read_only"
    finally:
        reader.close()


def test_server_down_is_a_clear_error_and_the_catalog_comes_back(
    postgres: PostgresServer, fresh_database: Settings
) -> None:
    create_catalog(fresh_database)
    catalog = open_catalog(fresh_database)
    try:
        catalog.save_upload("acme", *fake_upload(1, T0))
        postgres.stop_server("immediate")  # as a crash
        wait_until_down(fresh_database.database_url)
        attempt: Callable[[], object]
        for attempt, writes in (
            (lambda: catalog.get("acme"), False),
            (lambda: catalog.save_upload("acme", *fake_upload(2, T0)), True),
        ):
            with pytest.raises(StorageError) as caught:
                attempt()
            assert caught.value.reason == "catalog_unreachable", caught.value
            assert ("nothing was changed" in str(caught.value)) == writes, caught.value  # a read changes nothing
        with pytest.raises(StorageError, match="cannot be reached"):
            open_catalog(fresh_database)
    finally:
        postgres.start_server()
    try:
        tenant = catalog.get("acme")  # the same object reconnects by itself
        assert tenant is not None and tenant.upload is not None and tenant.upload.sha256 == f"{1:064x}"
    finally:
        catalog.close()


def test_init_on_postgresql_and_a_missing_schema_next_to_blobs(fresh_database: Settings, tmp_path: Path) -> None:
    """`init` makes the schema; a database without one next to a blob store that holds files is
    refused (a wrong URL must not lead the clean-up to trash every tenant's files)."""
    from click.testing import CliRunner

    from ooma_moh.cli import main

    env = {"OOMA_MOH_DATABASE_URL": fresh_database.database_url}
    home = ["--home", str(fresh_database.home)]
    result = CliRunner().invoke(main, [*home, "init"], env=env)
    assert result.exit_code == 0, result.output
    service = build_service(fresh_database)
    service.upload("acme", tone(tmp_path / "a.mp3", 440, 3, "mp3"), accept_disclaimer=True, accepted_by="a")
    service.catalog.close()
    empty_database = fresh_database.database_url.rsplit("/", 1)[0] + "/postgres"  # a wrong URL
    other = dataclasses.replace(fresh_database, database_url=empty_database)
    result = CliRunner().invoke(main, [*home, "list"], env={"OOMA_MOH_DATABASE_URL": other.database_url})
    assert result.exit_code == 1 and "blob store holds files" in result.output, result.output
    result = CliRunner().invoke(main, [*home, "db", "upgrade", "--json"], env=env)
    assert result.exit_code == 0 and '"applied": []' in result.output, result.output
