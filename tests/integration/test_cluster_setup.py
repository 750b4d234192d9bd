"""docs/cluster.md, "Setting up PostgreSQL", run as written on a real PostgreSQL: the SQL block of
the page (read from the page itself, so the test and the operators' instructions cannot drift)
makes a schema owner that ``ooma-moh db upgrade`` runs as, and a service role that runs everything
else — uploads, tokens, the endpoint map, sync, show — but can neither create a table nor upgrade
the schema, and has its rights on every table and sequence the upgrade created.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.postgres import PostgresServer

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cluster.md"
CLI = str(Path(sys.executable).parent / "ooma-moh")


def documented_sql() -> tuple[list[str], list[str]]:
    """The page's statements: those run in the server's own database, and those after
    ``\\connect ooma_moh``."""
    section = DOCS.read_text().split("## Setting up PostgreSQL", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sql\n(.*?)```", section, re.S)
    before, after = block.split("\\connect ooma_moh\n")

    def statements(text: str) -> list[str]:
        return [s.strip() for s in text.split(";") if s.strip()]

    return statements(before), statements(after)


def url(postgres: PostgresServer, role: str) -> str:
    return f"postgresql://{role}@127.0.0.1:{postgres.port}/ooma_moh"  # the test server trusts loopback


def ooma_moh(catalog: str, home: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OOMA_MOH_", "AWS_"))}
    env |= {"OOMA_MOH_HOME": str(home), "OOMA_MOH_DATABASE_URL": catalog}
    return subprocess.run([CLI, *argv], capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture
def documented_database(postgres: PostgresServer) -> str:
    """The roles and database of the page, made anew."""
    server, database = documented_sql()
    with psycopg.connect(postgres.url(), autocommit=True) as db:
        db.execute("DROP DATABASE IF EXISTS ooma_moh")
        db.execute("DROP ROLE IF EXISTS ooma_moh")
        db.execute("DROP ROLE IF EXISTS ooma_moh_admin")
        for statement in server:
            db.execute(statement.encode())
    with psycopg.connect(postgres.url("ooma_moh"), autocommit=True) as db:
        for statement in database:
            db.execute(statement.encode())
    return "ooma_moh"


def test_the_documented_roles_split_schema_changes_from_the_service(
    postgres: PostgresServer, documented_database: str, tmp_path: Path
) -> None:
    admin, service = url(postgres, "ooma_moh_admin"), url(postgres, "ooma_moh")
    refused = ooma_moh(service, tmp_path / "home", "db", "upgrade")
    assert refused.returncode == 1 and "permission denied" in refused.stderr, refused.stderr
    upgraded = ooma_moh(admin, tmp_path / "home", "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr

    sample = tmp_path / "hold.wav"
    made = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=f=440:d=3", str(sample)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    for argv in (
        ["upload", "acme", str(sample), "--accept-disclaimer", "--by", "test"],
        ["tokens", "create", "--tenant", "acme"],
        ["endpoints", "set", "PJSIP/acme-100", "acme"],
        ["sync", "--all"],
        ["show", "acme", "--json"],
        ["nodes"],
        ["delete", "acme"],
    ):
        done = ooma_moh(service, tmp_path / "home", *argv)
        assert done.returncode == 0, (argv, done.stderr)
    again = ooma_moh(service, tmp_path / "home", "db", "upgrade")  # a current schema: still not its to touch
    assert again.returncode == 1 and "permission denied" in again.stderr, again.stderr

    with psycopg.connect(service, autocommit=True) as db:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("CREATE TABLE intruder (x INTEGER)")
        tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        assert {"tenants", "uploads", "nodes", "schema_migrations"} <= set(tables)
        for table in tables:  # whatever a later migration adds is covered by the default privileges
            for right in ("SELECT", "INSERT", "UPDATE", "DELETE"):
                assert db.execute("SELECT has_table_privilege(%s, %s)", (table, right)).fetchone() == (True,), (
                    table,
                    right,
                )
        sequences = [r[0] for r in db.execute("SELECT sequencename FROM pg_sequences").fetchall()]
        assert sequences
        for sequence in sequences:
            assert db.execute("SELECT has_sequence_privilege(%s, 'USAGE')", (sequence,)).fetchone() == (True,)
