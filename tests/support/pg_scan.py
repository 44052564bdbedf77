"""Scan a PostgreSQL database at rest for tokens, without ever printing one.

Every table (ordinary tables and materialized views) of every schema except
the system ones (`pg_catalog`, `information_schema`, `pg_toast*`, other
sessions' `pg_temp*`) is read whole, a server-side cursor streaming its rows.
Each row is matched as its text rendering (`t::text`, which covers text,
jsonb, arrays, composite columns...), and every bytea column additionally as
its raw bytes decoded as UTF-8: `t::text` shows bytea as hex, which would hide
a token stored raw in a blob (LangGraph checkpoint blobs are msgpack bytes).

Matching is `tests.support.leaks.find_leaks`: the whole JWT, its signature
segment, and base64 copies of either. Findings name the table and the form
found, never the token.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from tests.support.leaks import find_leaks, leak_needles

__all__ = ["scan_postgres"]

_TABLES = """
SELECT n.nspname, c.relname, c.oid
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
ORDER BY n.nspname, c.relname
"""

# bytea columns, and columns of a domain over bytea
_BYTEA_COLUMNS = """
SELECT a.attname
FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped
  AND (t.oid = 'bytea'::regtype OR t.typbasetype = 'bytea'::regtype)
ORDER BY a.attnum
"""

_BATCH = 500


def scan_postgres(url: str, needles: list[str]) -> tuple[int, int, list[str]]:
    """Look for every form of every token in `needles` in every table of the database at `url`.

    Returns (tables scanned, bytes scanned, findings); a finding reads
    "schema.table: <find_leaks description>" or, for a match in the decoded
    bytes of a bytea column, "schema.table: column <name> (bytea): <description>".
    """
    forms = sorted({form for token in needles for form in leak_needles(token)}, key=len)
    tables = 0
    scanned = 0
    findings: list[str] = []
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.read_only = True
        for schema, table, oid in conn.execute(_TABLES).fetchall():
            tables += 1
            name = f"{schema}.{table}"
            byteas = [row[0] for row in conn.execute(_BYTEA_COLUMNS, (oid,)).fetchall()]
            query = sql.SQL("SELECT {} FROM {} AS t").format(
                sql.SQL(", ").join(
                    [sql.SQL("t::text")] + [sql.SQL("t.{}").format(sql.Identifier(col))
                                            for col in byteas]
                ),
                sql.Identifier(schema, table),
            )
            seen: set[str] = set()
            with conn.cursor(name=f"onbehalf_scan_{tables}") as cursor:
                cursor.itersize = _BATCH
                cursor.execute(query)
                for row in cursor:
                    text = row[0] or ""
                    scanned += len(text.encode("utf-8", errors="replace"))
                    places: list[tuple[str, str]] = [(name, text)]
                    for col, value in zip(byteas, row[1:], strict=True):
                        if value is None:
                            continue
                        raw = bytes(value)
                        scanned += len(raw)
                        decoded = raw.decode("utf-8", errors="replace")
                        places.append((f"{name}: column {col} (bytea)", decoded))
                    for where, haystack in places:
                        # cheap pre-check with the precomputed forms, descriptions only on a hit
                        if forms and any(form in haystack for form in forms):
                            for found in find_leaks(haystack, needles):
                                finding = f"{where}: {found}"
                                if finding not in seen:
                                    seen.add(finding)
                                    findings.append(finding)
        conn.rollback()
    return tables, scanned, findings
