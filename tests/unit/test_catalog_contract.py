"""The catalog contract every back end keeps, run on the in-memory fake and on SQLite (PostgreSQL
runs the same scenarios in tests/integration/test_catalog_backends.py): a fake that drifts from
the real catalog fails here, not in a test that trusted it."""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from ooma_moh.errors import StorageError
from ooma_moh.holdstats import HoldDay, bucket_of
from ooma_moh.http.logins import check_session, create_login_link, redeem_login_link
from ooma_moh.http.tokens import check_token, create_token
from ooma_moh.model import Disclaimer, Draft, MohSetting, Rendition, UploadedFile
from ooma_moh.storage import Catalog, SqliteCatalog
from ooma_moh.storage.memory import MemoryCatalog

T0 = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def fake_upload(n: int, at: datetime) -> tuple[UploadedFile, Disclaimer, tuple[Rendition, ...]]:
    sha = f"{n:064x}"
    return (
        UploadedFile(f"f{n}.mp3", 1000 + n, sha, 3000, "mp3", at),
        Disclaimer("tester", at, sha, "v1"),
        (Rendition("sln", 8000, 48000, f"{n + 10**6:064x}"), Rendition("ulaw", 8000, 24000, f"{n + 2 * 10**6:064x}")),
    )


def blobs_of(n: int) -> set[str]:
    upload, _, renditions = fake_upload(n, T0)
    return {upload.sha256, *(r.sha256 for r in renditions)}


def fake_draft(n: int, tenant: str, expires: datetime) -> Draft:
    upload, _, renditions = fake_upload(n, T0)
    upload = dataclasses.replace(upload, analysis={"warnings": ["too_short"], "duration_ms": 3000})
    return Draft(f"d{n}", tenant, upload, renditions, expires)


@pytest.fixture(params=["memory", "sqlite"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    made: Catalog = MemoryCatalog() if request.param == "memory" else SqliteCatalog(tmp_path / "catalog.sqlite3")
    yield made
    made.close()


def test_a_tenant_uploads_replaces_and_returns_to_default_with_its_history(catalog: Catalog) -> None:
    assert catalog.get("acme") is None and catalog.list() == []
    assert catalog.set_default("acme", T0) is None  # unknown tenant: nothing to drop
    first = catalog.save_upload("acme", *fake_upload(1, T0))
    assert first.setting is MohSetting.FILE and first.upload == fake_upload(1, T0)[0]
    assert first.disclaimer == fake_upload(1, T0)[1] and first.renditions == fake_upload(1, T0)[2]
    second = catalog.save_upload("acme", *fake_upload(2, T0 + timedelta(seconds=1)))
    assert catalog.get("acme") == second and [t.tenant_id for t in catalog.list()] == ["acme"]
    assert second.upload is not None and second.previous == first.upload  # the replaced file is kept
    assert catalog.referenced_blobs() == blobs_of(1) | blobs_of(2)
    after = catalog.set_default("acme", T0 + timedelta(seconds=2))
    assert after is not None and after.setting is MohSetting.DEFAULT and after.upload is None
    assert after.previous == second.upload  # the removed file is kept; the one before is dropped
    assert catalog.get("acme") == after and catalog.referenced_blobs() == blobs_of(2)
    audit = catalog.audit("acme")
    assert [e.action for e in audit] == ["upload", "upload", "delete"]
    assert audit[1].detail["replaced_upload"] == f"{1:064x}" and audit[1].detail["accepted_by"] == "tester"
    assert audit[2].detail == {"removed_upload": f"{2:064x}"} and audit[2].at == T0 + timedelta(seconds=2)
    catalog.save_upload("beta", *fake_upload(3, T0))
    assert [t.tenant_id for t in catalog.list()] == ["acme", "beta"] and catalog.audit("nobody") == []


def test_restore_brings_back_the_previous_file_and_twice_comes_back(catalog: Catalog) -> None:
    later = Disclaimer("restorer", T0 + timedelta(seconds=9), f"{1:064x}", "v2")
    assert catalog.restore_previous("acme", later, T0) is None  # unknown tenant
    first = catalog.save_upload("acme", *fake_upload(1, T0))
    assert first.previous is None and catalog.restore_previous("acme", later, T0) is None  # nothing replaced yet
    catalog.save_upload("acme", *fake_upload(2, T0))
    restored = catalog.restore_previous("acme", later, T0 + timedelta(seconds=3))
    assert restored is not None and restored.setting is MohSetting.FILE
    assert restored.upload == first.upload and restored.renditions == first.renditions
    assert restored.disclaimer == later and restored.previous == fake_upload(2, T0)[0]
    again = catalog.restore_previous("acme", Disclaimer("x", T0, f"{2:064x}", "v2"), T0 + timedelta(seconds=4))
    assert again is not None and again.upload == fake_upload(2, T0)[0] and again.previous == first.upload
    assert catalog.get("acme") == again
    # deleted, then restored: back on the file, nothing left to restore
    catalog.set_default("acme", T0 + timedelta(seconds=5))
    back = catalog.restore_previous("acme", later, T0 + timedelta(seconds=6))
    assert back is not None and back.upload == fake_upload(2, T0)[0] and back.previous is None
    assert catalog.referenced_blobs() == blobs_of(2)
    audit = catalog.audit("acme")
    assert [e.action for e in audit][-3:] == ["restore", "delete", "restore"]
    assert audit[2].detail["accepted_by"] == "restorer" and audit[2].detail["replaced_upload"] == f"{2:064x}"


def test_drafts_are_the_tenants_own_bounded_and_expire(catalog: Catalog) -> None:
    end = T0 + timedelta(hours=1)
    assert catalog.add_draft(fake_draft(1, "acme", end), 2, T0)
    assert catalog.add_draft(fake_draft(2, "acme", end), 2, T0)
    assert not catalog.add_draft(fake_draft(3, "acme", end), 2, T0)  # the limit
    assert catalog.add_draft(fake_draft(4, "beta", end), 2, T0)  # another tenant's count
    found = catalog.draft("acme", "d1", T0)
    assert found == fake_draft(1, "acme", end) and found.upload.analysis == {
        "warnings": ["too_short"],
        "duration_ms": 3000,
    }
    assert catalog.draft("beta", "d1", T0) is None  # never another tenant's
    assert catalog.draft("acme", "d1", end) is None  # expired: as if it did not exist
    assert catalog.referenced_blobs() == blobs_of(1) | blobs_of(2) | blobs_of(4)  # drafts' blobs are kept
    assert not catalog.drop_draft("beta", "d2") and catalog.drop_draft("acme", "d2")
    assert catalog.draft("acme", "d2", T0) is None and not catalog.drop_draft("acme", "d2")
    # saving a draft removes it in the same step
    draft = catalog.draft("acme", "d1", T0)
    assert draft is not None
    saved = catalog.save_upload("acme", draft.upload, fake_upload(1, T0)[1], draft.renditions, draft_id="d1")
    assert saved.upload == draft.upload and catalog.draft("acme", "d1", T0) is None
    assert catalog.get("acme") == saved and saved.upload is not None and saved.upload.analysis == draft.upload.analysis
    # expired drafts go, and make room
    assert catalog.add_draft(fake_draft(5, "beta", T0 + timedelta(seconds=1)), 2, T0)
    assert not catalog.add_draft(fake_draft(6, "beta", end), 2, T0)
    assert catalog.add_draft(fake_draft(6, "beta", end), 2, T0 + timedelta(seconds=1))
    assert catalog.drop_expired_drafts(end) == 2 and catalog.referenced_blobs() == blobs_of(1)


def test_endpoint_map(catalog: Catalog) -> None:
    catalog.map_endpoint("PJSIP/acme-100", "acme")
    catalog.map_endpoint("PJSIP/acme-100", "acme2")
    catalog.map_endpoint("PJSIP/a-1", "acme")
    assert catalog.endpoint_tenant("PJSIP/acme-100") == "acme2" and catalog.endpoint_tenant("PJSIP/x") is None
    assert catalog.endpoints() == {"PJSIP/a-1": "acme", "PJSIP/acme-100": "acme2"}
    catalog.map_endpoint("PJSIP/acme-100", None)
    catalog.map_endpoint("PJSIP/never", None)
    assert catalog.endpoints() == {"PJSIP/a-1": "acme"}


def test_tokens_links_and_sessions(catalog: Catalog) -> None:
    token, bearer = create_token(catalog, tenant_id="acme", now=T0)
    assert check_token(catalog, bearer) == token and catalog.tokens() == [token]
    assert check_token(catalog, bearer + "x") is None
    assert catalog.revoke_token(token.id, T0) and not catalog.revoke_token(token.id, T0)
    assert not catalog.revoke_token("unknown", T0) and check_token(catalog, bearer) is None
    link, credential = create_login_link(catalog, tenant_id="acme", label="Camille", now=T0, ttl=timedelta(minutes=15))
    assert catalog.open_sign_ins(T0)[0] == [link] and catalog.open_sign_ins(T0 + timedelta(minutes=15))[0] == []
    late = redeem_login_link(catalog, credential, T0 + timedelta(minutes=16), timedelta(hours=8))
    assert late[0] is None and late[2] == "expired"
    session, cookie, refusal = redeem_login_link(catalog, credential, T0 + timedelta(minutes=1), timedelta(hours=8))
    assert session is not None and refusal is None
    assert catalog.open_sign_ins(T0 + timedelta(minutes=2)) == ([], [session])
    assert check_session(catalog, cookie, T0 + timedelta(hours=1)) == session
    assert redeem_login_link(catalog, credential, T0 + timedelta(minutes=2), timedelta(hours=8))[2] == "used"
    other, _ = create_login_link(catalog, tenant_id="acme", label="Dana", now=T0, ttl=timedelta(minutes=15))
    assert catalog.sign_out_tenant("acme", T0 + timedelta(minutes=3)) == (1, 1)
    assert catalog.sign_out_tenant("acme", T0 + timedelta(minutes=4)) == (0, 0)
    assert check_session(catalog, cookie, T0 + timedelta(hours=3)) is None
    found = catalog.login_link(other.id)
    assert found is not None and found[0].refusal(T0) == "revoked"
    assert not catalog.end_session(session.id, T0 + timedelta(hours=4)) and not catalog.end_session("x", T0)


def legacy_catalog(path: Path, *, with_version_column: bool) -> None:
    """A catalog as an ooma-moh before recorded schema versions made it, with one tenant on file."""
    from ooma_moh.storage.sqlite_file import MIGRATIONS

    db = sqlite3.connect(path, isolation_level=None)
    tables = MIGRATIONS[0][1].split("CREATE TABLE IF NOT EXISTS tokens")[0]  # tokens etc. came later
    db.executescript(tables)
    if with_version_column:
        db.execute("ALTER TABLE uploads ADD COLUMN disclaimer_version TEXT")
    db.execute(
        "INSERT INTO uploads (id, tenant_id, original_name, size, sha256, duration_ms, container, uploaded_at,"
        " accepted_by, accepted_at, disclaimer_sha256) VALUES (1, 'acme', 'a.mp3', 10, ?, 3000, 'mp3', ?, 'al', ?, ?)",
        ("a" * 64, T0.isoformat(), T0.isoformat(), "a" * 64),
    )
    db.execute("INSERT INTO tenants VALUES ('acme', 'file', 1, ?)", (T0.isoformat(),))
    db.close()


@pytest.mark.parametrize("with_version_column", [False, True])
def test_an_existing_sqlite_catalog_is_upgraded_in_place(tmp_path: Path, with_version_column: bool) -> None:
    from ooma_moh.storage.sqlite_file import LATEST

    path = tmp_path / "catalog.sqlite3"
    legacy_catalog(path, with_version_column=with_version_column)
    reader = SqliteCatalog(path, writable=False)  # a reader reads the old layout as it is
    before = reader.get("acme")
    reader.close()
    assert before is not None and before.upload is not None and before.disclaimer is not None
    assert before.disclaimer.text_version is None
    catalog = SqliteCatalog(path)
    try:
        assert catalog.get("acme") == before  # nothing lost
        token, bearer = create_token(catalog, tenant_id="acme", now=T0)  # a table the old layout lacked
        assert check_token(catalog, bearer) == token
        catalog.save_upload("acme", *fake_upload(7, T0))
        saved = catalog.get("acme")
        assert saved is not None and saved.disclaimer is not None and saved.disclaimer.text_version == "v1"
    finally:
        catalog.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    db.close()
    SqliteCatalog(path).close()  # opening again changes nothing
    with contextlib.closing(SqliteCatalog(path, writable=False)) as reader:
        assert reader.get("acme") == saved


def test_a_catalog_of_a_newer_ooma_moh_is_refused(tmp_path: Path) -> None:
    from ooma_moh.storage.sqlite_file import LATEST

    path = tmp_path / "catalog.sqlite3"
    SqliteCatalog(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {LATEST + 1}")
    db.close()
    for writable in (True, False):
        with pytest.raises(StorageError) as caught:
            SqliteCatalog(path, writable=writable)
        assert caught.value.reason == "schema_newer", caught.value


def test_processes_opening_a_new_catalog_at_once_each_apply_nothing_twice(tmp_path: Path) -> None:
    """Eight writers open a catalog that does not exist yet, at once: every one opens it (the
    versions are applied under the write lock, read again there), none sees a half-made schema
    (before: "duplicate column name" for a writer that re-applied a version another had applied)."""
    import threading

    from ooma_moh.storage.sqlite_file import LATEST

    path, errors, start = tmp_path / "catalog.sqlite3", [], threading.Barrier(8)

    def writer() -> None:
        start.wait()
        try:
            SqliteCatalog(path).close()
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    db.close()


def test_hold_days_are_only_added_to_and_merge_across_writers(catalog: Catalog) -> None:
    """Rule 4 of ooma_moh/holdstats.py: two writes for one tenant and day add up (counts, time,
    buckets); other tenants and days stay apart; a span reads only its days; old days drop."""
    day1, day2 = date(2026, 12, 1), date(2026, 12, 2)
    a = HoldDay(day1)
    a.count(4.0, hung_up=False, fallback=False)
    a.count(6.5, hung_up=True, fallback=False)
    b = HoldDay(day1)
    b.count(6.2, hung_up=False, fallback=True)
    c = HoldDay(day2)
    c.count(100.0, hung_up=False, fallback=False)
    catalog.add_hold_days([("acme", a), ("acme", c)])
    catalog.add_hold_days([("acme", b), ("zeta", dataclasses.replace(b, buckets=dict(b.buckets)))])
    catalog.add_hold_days([])
    days = catalog.hold_days("acme", day1, day2)
    assert [d.day for d in days] == [day1, day2]
    assert (days[0].holds, days[0].hung_up, days[0].fallback) == (3, 1, 1)
    assert days[0].seconds == pytest.approx(16.7)
    assert days[0].buckets == {bucket_of(4.0): 1, bucket_of(6.5): 2}
    assert days[1].buckets == {bucket_of(100.0): 1} and days[1].seconds == pytest.approx(100.0)
    assert catalog.hold_days("acme", day2, day2) == [days[1]]
    assert catalog.hold_days("nobody", day1, day2) == []
    totals = catalog.hold_totals(day1, day2)
    assert set(totals) == {"acme", "zeta"}
    assert (totals["acme"].holds, totals["acme"].day, totals["zeta"].holds) == (4, day1, 1)
    assert totals["acme"].buckets == {bucket_of(4.0): 1, bucket_of(6.5): 2, bucket_of(100.0): 1}
    assert catalog.hold_totals(day2, day2)["acme"].holds == 1 and "zeta" not in catalog.hold_totals(day2, day2)
    assert catalog.drop_hold_days_before(day2) == 2  # acme's and zeta's first day
    assert catalog.hold_days("acme", day1, day2) == [days[1]] and catalog.hold_totals(day1, day1) == {}
