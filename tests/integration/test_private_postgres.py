"""The suite's private PostgreSQL and the at-rest token scanner work as the other tests assume."""

from __future__ import annotations

import base64
import json
import pickle

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.leaks import fingerprint
from tests.support.pg_scan import scan_postgres
from tests.support.postgres_server import PrivatePostgres
from tests.support.postgres_server import private_postgres as private_postgres  # fixture
from tests.support.tokens import mint


@pytest.fixture
def db(private_postgres: PrivatePostgres, request: pytest.FixtureRequest) -> str:
    """A fresh database named after the test."""
    return private_postgres.create_database(f"t_{request.node.name}"[:63].lower())


def test_server_answers_on_loopback_only(private_postgres: PrivatePostgres) -> None:
    assert private_postgres.running
    with psycopg.connect(private_postgres.url("postgres")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
        settings = dict(conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('listen_addresses', 'port', 'fsync', 'unix_socket_directories')"
        ).fetchall())
        is_superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
        assert is_superuser.fetchone() == (True,)
    assert private_postgres.port != 5432
    assert settings == {
        "listen_addresses": "127.0.0.1",
        "port": str(private_postgres.port),
        "fsync": "off",
        "unix_socket_directories": str(private_postgres.dir),
    }


def test_create_database_gives_an_empty_database(private_postgres: PrivatePostgres) -> None:
    url = private_postgres.create_database("t_recreated")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE leftover (x int)")
        conn.execute("INSERT INTO leftover VALUES (1)")
    # a connection still open on it does not block the drop
    with psycopg.connect(url) as holder:
        assert private_postgres.create_database("t_recreated") == url
        with pytest.raises(psycopg.OperationalError):
            holder.execute("SELECT 1")
    with psycopg.connect(url) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname NOT IN "
            "('pg_catalog', 'information_schema')"
        ).fetchone()
        assert tables == (0,)
    assert scan_postgres(url, [mint("alice")])[:1] == (0,)


def test_data_survives_restart_on_the_same_port(private_postgres: PrivatePostgres, db: str) -> None:
    port = private_postgres.port
    with psycopg.connect(db) as conn:  # committed on exit; synchronous_commit is off
        conn.execute("CREATE TABLE kept (note text)")
        conn.execute("INSERT INTO kept VALUES ('before restart')")
    private_postgres.restart()
    assert private_postgres.running
    assert private_postgres.port == port
    assert private_postgres.url("x").endswith(f":{port}/x")
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT note FROM kept").fetchall() == [("before restart",)]


def test_stop_then_start(private_postgres: PrivatePostgres) -> None:
    private_postgres.stop()
    assert not private_postgres.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(private_postgres.url("postgres"), connect_timeout=2).close()
    private_postgres.start()
    assert private_postgres.running


def test_scan_finds_a_token_in_text_jsonb_and_bytea(db: str) -> None:
    token = mint("alice")
    other = mint("bob")
    with psycopg.connect(db) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute('CREATE TABLE app."Notes" (id int, body text)')
        conn.execute("CREATE TABLE public.docs (id int, doc jsonb)")
        conn.execute("CREATE TABLE public.blobs (id int, ignored bytea, blob bytea)")
        conn.execute("CREATE TABLE public.clean (id int, body text, blob bytea)")
        conn.execute(
            'INSERT INTO app."Notes" VALUES (1, %s)', (f"Authorization: Bearer {token}",)
        )
        conn.execute(
            "INSERT INTO public.docs VALUES (1, %s)",
            (Jsonb({"headers": {"authorization": f"Bearer {token}"}}),),
        )
        # raw bytes around the token, as a pickled/msgpack checkpoint blob stores it
        blob = b"\x80\x05\x95\xff\xfe" + pickle.dumps({"token": token}) + b"\xc4\x00\xff"
        conn.execute("INSERT INTO public.blobs VALUES (1, NULL, %s)", (blob,))
        conn.execute(
            "INSERT INTO public.clean VALUES (1, %s, %s)",
            (json.dumps({"sub": "alice"}), b"\x00\x01 not a token"),
        )

    tables, scanned, findings = scan_postgres(db, [token])

    assert tables == 4
    assert scanned > len(blob)
    by_table = {finding.split(": ", 1)[0] for finding in findings}
    assert by_table == {"app.Notes", "public.docs", "public.blobs"}
    assert any(f.startswith("app.Notes: ") and "the whole JWT" in f for f in findings)
    assert any(f.startswith("public.docs: ") and "the whole JWT" in f for f in findings)
    assert any(
        f.startswith("public.blobs: column blob (bytea): ") and "the whole JWT" in f
        for f in findings
    )
    assert not any("ignored" in f for f in findings)
    assert all(fingerprint(token) in f for f in findings)
    signature = token.rsplit(".", 1)[-1]
    assert not any(token in f or signature in f for f in findings), "findings leak the needle"
    # a token that was never written is not found
    assert scan_postgres(db, [other])[2] == []


def test_scan_finds_a_base64_copy(db: str) -> None:
    token = mint("alice")
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE wrapped (blob text)")
        conn.execute(
            "INSERT INTO wrapped VALUES (%s)",
            (base64.b64encode(b"xy" + token.encode()).decode(),),
        )
    findings = scan_postgres(db, [token])[2]
    assert findings and all(f.startswith("public.wrapped: ") for f in findings)
    assert any("base64 standard" in f for f in findings)


def test_scan_of_a_clean_database_finds_nothing(db: str) -> None:
    with psycopg.connect(db) as conn:
        conn.execute("CREATE TABLE t (id int, body text, doc jsonb, blob bytea)")
        conn.execute(
            "INSERT INTO t VALUES (1, 'hello', '{\"a\": 1}', '\\x0001'::bytea),"
            " (2, NULL, NULL, NULL)"
        )
    tables, scanned, findings = scan_postgres(db, [mint("alice")])
    assert (tables, findings) == (1, [])
    assert scanned > 0
