"""The statement normalizer: literals become ``?``, lists collapse, names are found."""

from __future__ import annotations

import pytest

from tracer.instrumentation import sqltext

CASES = [
    ("SELECT * FROM users WHERE id = 42", "SELECT * FROM users WHERE id = ?"),
    ("select a from t where b = 'x' and c = 3.5e-3", "select a from t where b = ? and c = ?"),
    ("SELECT 'it''s' FROM t", "SELECT ? FROM t"),
    (r"SELECT E'a\'b' FROM t", "SELECT ? FROM t"),
    ("SELECT X'DEADBEEF', 0xFF, .5", "SELECT ?, ?, ?"),
    ("SELECT $$ dollar $$, $q$ tagged $q$", "SELECT ?, ?"),
    ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (?)"),
    ("SELECT * FROM t WHERE id in (%s,%s , %s)", "SELECT * FROM t WHERE id IN (?)"),
    ("SELECT * FROM t WHERE id = ANY(ARRAY[1, 2])", "SELECT * FROM t WHERE id = ANY(ARRAY[?])"),
    ("INSERT INTO t VALUES (1, 'a'), (2, 'b')", "INSERT INTO t VALUES (?, ?)"),
    ("INSERT INTO t VALUES (?, ?)", "INSERT INTO t VALUES (?, ?)"),
    ("UPDATE t SET a = $1 WHERE b = :name", "UPDATE t SET a = $1 WHERE b = :name"),
    ('SELECT "col 1", t2.x FROM "T1" t2', 'SELECT "col 1", t2.x FROM "T1" t2'),
    ("SELECT 1 -- secret\n, 2 /* secret */", "SELECT ?, ?"),
    ("SELECT 'cut short secret", "SELECT ?"),
    ("  SELECT\n\t1  ", "SELECT ?"),
]


@pytest.mark.parametrize(("sql", "text"), CASES)
def test_literals_become_placeholders(sql: str, text: str) -> None:
    assert sqltext.normalize(sql) == text


@pytest.mark.parametrize(
    ("sql", "operation", "collection", "name"),
    [
        ("SELECT * FROM users WHERE id = 1", "SELECT", "users", "SELECT users"),
        ("insert into public.orders (a) values (1)", "INSERT", "public.orders",
         "INSERT public.orders"),
        ("UPDATE accounts SET v = 1", "UPDATE", "accounts", "UPDATE accounts"),
        ("DELETE FROM \"Odd Name\" WHERE 1", "DELETE", "Odd Name", "DELETE Odd Name"),
        ("CREATE TABLE IF NOT EXISTS t3 (id int)", "CREATE", "t3", "CREATE t3"),
        ("SELECT 1", "SELECT", None, "SELECT"),
        ("BEGIN", "BEGIN", None, "BEGIN"),
        ("(SELECT a FROM t1) UNION (SELECT a FROM t2)", "SELECT", "t1", "SELECT t1"),
        ("123", None, None, "query"),
    ],
)  # fmt: skip
def test_operation_collection_and_name(
    sql: str, operation: str | None, collection: str | None, name: str
) -> None:
    found = sqltext.statement(sql)
    assert (found[sqltext.OPERATION], found[sqltext.COLLECTION], found[sqltext.NAME]) == (
        operation,
        collection,
        name,
    )


def test_a_repeated_statement_is_found_in_the_cache() -> None:
    sql = "SELECT * FROM cached WHERE id = 7"
    first = sqltext.statement(sql)
    hits = sqltext.statement.cache_info().hits
    assert sqltext.statement(sql) is first
    assert sqltext.statement.cache_info().hits == hits + 1
    assert sqltext.statement.cache_info().maxsize == sqltext.CACHE_SIZE


def test_without_text_keeps_the_names_and_the_key_only() -> None:
    found = sqltext.without_text("SELECT a FROM t WHERE b = 'secret'")
    assert found == (None, "SELECT", "t", "SELECT t", "SELECT a FROM t WHERE b = ?")


def test_a_long_statement_is_cut_before_normalizing() -> None:
    sql = "SELECT '" + "s" * (sqltext.MAX_STATEMENT * 2)
    assert sqltext.normalize(sql) == "SELECT ?"


def test_text_of_what_drivers_take() -> None:
    assert sqltext.text_of("SELECT 1") == "SELECT 1"
    assert sqltext.text_of(b"SELECT 1") == "SELECT 1"
    assert sqltext.text_of(object()) is None
