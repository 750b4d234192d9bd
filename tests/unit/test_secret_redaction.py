"""A database URL's password never reaches a log line, ``/readyz``, ``ooma-moh nodes`` or doctor's
output: psycopg quotes a connection string it cannot parse whole (a mistyped
``OOMA_MOH_DATABASE_URL``), and that text goes through :func:`ooma_moh.storage.postgres.pg_error`.
The psycopg errors here are real: parsing a connection string needs no server."""

from __future__ import annotations

import logging

import psycopg
import pytest

from ooma_moh.agent import failure_text
from ooma_moh.doctor.findings import FAIL, Finding, one_line
from ooma_moh.errors import StorageError
from ooma_moh.logsafe import RedactingFormatter, redact
from ooma_moh.storage.postgres_db import connect, pg_error

SECRET = "S3cret-pw"


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"postgresql://moh:{SECRET}@db.example/moh", "postgresql://moh:<secret>@db.example/moh"),
        (f"postgres//moh:{SECRET}@db/x", "postgres//moh:<secret>@db/x"),  # the colon forgotten
        (f"s3://key:{SECRET}@bucket/x", "s3://key:<secret>@bucket/x"),
        (f"postgresql://:{SECRET}@db/x", "postgresql://:<secret>@db/x"),
        (f"host=db password={SECRET} dbname=moh", "host=db password=<secret> dbname=moh"),
        (f"host=db password = '{SECRET} x' port=5", "host=db password = <secret> port=5"),
        (
            f"postgresql://db/moh?sslmode=require&password={SECRET}&x=1",
            "postgresql://db/moh?sslmode=require&password=<secret>&x=1",
        ),
        (f"PASSWORD={SECRET}", "PASSWORD=<secret>"),
    ],
)
def test_redact_hides_database_passwords(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    ["http://127.0.0.1:8088/ari", "postgresql://moh@db/moh", "host=db user=moh dbname=moh", "sync scope=all result=ok"],
)
def test_redact_leaves_text_without_passwords(text: str) -> None:
    assert redact(text) == text


def mistyped_connect() -> psycopg.Error:
    with pytest.raises(psycopg.Error) as caught:
        psycopg.connect(f"postgres//moh:{SECRET}@db/x")
    assert SECRET in str(caught.value)  # what psycopg itself says
    return caught.value


def test_pg_error_does_not_repeat_the_password() -> None:
    error = pg_error(mistyped_connect(), "connecting to the catalog")
    assert SECRET not in str(error) and "postgres//moh:<secret>@db/x" in str(error)


def test_a_mistyped_database_url_is_a_storage_error_without_the_password() -> None:
    with pytest.raises(StorageError) as caught:
        connect(f"postgres//moh:{SECRET}@db/x")
    assert SECRET not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__  # no traceback shows psycopg's text
    assert SECRET not in failure_text(caught.value)  # /readyz and `ooma-moh nodes`


def test_doctor_output_does_not_repeat_the_password() -> None:
    raw = str(mistyped_connect())
    assert SECRET not in one_line(raw)
    finding = Finding(
        "catalog",
        FAIL,
        f"the PostgreSQL catalog cannot be opened: {raw}",
        f"check OOMA_MOH_DATABASE_URL=postgresql://moh:{SECRET}@db/x",
    )
    assert SECRET not in finding.line() and SECRET not in str(finding.as_dict())


def test_log_lines_do_not_repeat_the_password() -> None:
    record = logging.LogRecord(
        "ooma_moh.agent", logging.WARNING, __file__, 1, "agent: %s", (str(mistyped_connect()),), None
    )
    assert SECRET not in RedactingFormatter().format(record)


def test_the_fast_path_of_redact_changes_nothing_it_decides() -> None:
    """``redact`` skips an expression where it cannot match: on random lines built from the
    pieces credentials are made of, it gives what the three expressions alone give."""
    import random

    from ooma_moh.logsafe import _CREDENTIAL, _KEY_PASSWORD, _URL_PASSWORD

    def every_expression(text: str) -> str:
        text = _CREDENTIAL.sub(lambda m: f"{m.group(1)}_<secret>", text)
        text = _URL_PASSWORD.sub(r"\1<secret>", text)
        return _KEY_PASSWORD.sub(r"\1<secret>", text)

    pieces = ["omh_", "0123abcd", "89ef", "_", "%5F", "%5f", "x", " ", "//u:", "@", "PASSWORD=", "paſſword=", "'", "Z"]
    rng = random.Random(24)
    redacted = 0
    for _ in range(20_000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 14)))
        assert redact(line) == every_expression(line), line
        redacted += redact(line) != line
    assert redacted > 1_000  # the lines did quote credentials of every kind, not only harmless text
