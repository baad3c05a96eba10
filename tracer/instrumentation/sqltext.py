"""SQL statements made safe to record: literals replaced by ``?``, and what a span names.

The interface the database instrumentations (and anything else that records a statement) use:

* :func:`statement` ``(sql) -> Statement``, cached: a statement seen before costs one lookup in
  a bounded LRU cache (:data:`CACHE_SIZE` entries). ``sql`` is a ``str`` (``bytes`` are decoded
  first by the caller; see :func:`text_of`).
* :data:`Statement` is a plain tuple, read by index (:data:`TEXT`, :data:`OPERATION`,
  :data:`COLLECTION`, :data:`NAME`, :data:`KEY`):

  - ``TEXT``: the normalized statement (``db.query.text``), or None when queries are not
    recorded (``record_queries = False``; :func:`without_text` makes that form);
  - ``OPERATION``: the first keyword, upper-case (``SELECT``, ``INSERT``, ...; ``db.operation
    .name``), or None;
  - ``COLLECTION``: the first table named (``db.collection.name``), or None;
  - ``NAME``: the span name, ``"SELECT users"`` (operation and collection), the operation alone,
    or ``"query"``;
  - ``KEY``: the normalized statement, always (even when ``TEXT`` is None): what tells two
    statements apart (N+1 detection groups by it). It is never exported when ``TEXT`` is None.

:func:`normalize` is the uncached normalizer. Literals are strings (``'...'`` with ``''``
inside, as SQL and PostgreSQL's standard strings have it; ``E'...'`` with backslash escapes too;
``X'...'``; PostgreSQL's ``$tag$...$tag$``), numbers (integer, decimal, exponent) and hex
(``0x1f``); they become ``?``. ``IN (?, ?, ...)`` becomes ``IN (?)``, a ``VALUES`` list of
several rows keeps its first row, ``ARRAY[?, ?]`` becomes ``ARRAY[?]``. Comments are dropped
(they may hold anything), runs of white space become one space. A backslash escapes a quote
only in an ``E'...'`` string (MySQL's escapes are not SQL's).
Placeholders (``?``, ``%s``, ``%(name)s``, ``$1``, ``:name``) and identifiers, quoted ones
included, are kept. An unterminated string (a statement cut short) is replaced up to the end.
Parameters are never seen here: they are not part of the statement.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: Entries of the statement cache (an LRU: the least recently used statement goes first).
CACHE_SIZE = 2048
#: The longest statement normalized; the rest is cut before normalizing (an unterminated
#: literal at the cut is replaced like any other).
MAX_STATEMENT = 8192
#: The longest collection name kept.
MAX_COLLECTION = 128

Statement = tuple[str | None, str | None, str | None, str, str]
TEXT = 0
OPERATION = 1
COLLECTION = 2
NAME = 3
KEY = 4

# One pass over the statement: each alternative is a token that is kept or replaced. Quoted
# identifiers and placeholders come before numbers so that ``"t1"`` and ``$1`` stay as they are.
_TOKENS = re.compile(
    r"""
      (?P<comment>--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<ident>"(?:[^"]|"")*"|`[^`]*`|\[[A-Za-z_][\w ]*\])
    | (?P<dollar>\$\$.*?(?:\$\$|\Z)|\$(?P<tag>[A-Za-z_]\w*)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<escaped>(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*(?:'|\Z))
    | (?P<string>(?:(?<![\w$])[XxBbNn])?'(?:[^']|'')*(?:'|\Z))
    | (?P<placeholder>\$\d+|%(?:\([^)]*\))?s|:[A-Za-z_]\w*|\?)
    | (?P<word>[A-Za-z_][\w$]*)
    | (?P<number>0[xX][0-9A-Fa-f]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<space>\s+)
    """,
    re.VERBOSE | re.DOTALL,
)

_PLACE = r"(?:\?|%s|%\([^)]*\)s|\$\d+|:[A-Za-z_]\w*)"
_IN_LIST = re.compile(rf"\bIN \( ?{_PLACE}(?: ?, ?{_PLACE})* ?\)", re.IGNORECASE)
_ARRAY = re.compile(rf"\bARRAY\[ ?{_PLACE}(?: ?, ?{_PLACE})* ?\]", re.IGNORECASE)
_ROW = rf"\( ?{_PLACE}(?: ?, ?{_PLACE})* ?\)"
_VALUES = re.compile(rf"\b(VALUES ?)({_ROW})(?: ?, ?{_ROW})+", re.IGNORECASE)

# The first table a statement names, after the keyword that introduces it.
_COLLECTION = re.compile(
    r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|ON)\s+(?:IF\s+(?:NOT\s+)?EXISTS\s+)?(?:ONLY\s+)?"
    r"((?:\"(?:[^\"]|\"\")*\"|`[^`]*`|[A-Za-z_][\w$]*)(?:\.(?:\"(?:[^\"]|\"\")*\"|`[^`]*`|"
    r"[A-Za-z_][\w$]*))*)",
    re.IGNORECASE,
)
# The operation: the first word, after any opening parentheses.
_FIRST = re.compile(r"[( ]*([A-Za-z_]+)\b")
# Statements whose table follows a keyword other than their first one. For these the first
# match of _COLLECTION is the table; any other statement names no collection (``SELECT 1``).
_NAMES_TABLE = frozenset(
    ("SELECT", "INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "CREATE", "DROP", "ALTER",
     "TRUNCATE", "COPY", "WITH", "UPSERT")
)  # fmt: skip


def _token(match: re.Match[str]) -> str:
    kind = match.lastgroup
    if kind == "word" or kind == "ident" or kind == "placeholder":
        return match.group()
    if kind == "space" or kind == "comment":
        return " "
    return "?"


def normalize(sql: str) -> str:
    """``sql`` with its literals replaced by ``?`` and lists collapsed (see the module)."""
    if len(sql) > MAX_STATEMENT:
        sql = sql[:MAX_STATEMENT]
    text = _TOKENS.sub(_token, sql)
    # Whatever no alternative matched (operators, punctuation) is kept as it is; white space
    # is one space, and none before a comma or a closing parenthesis.
    text = " ".join(text.split())
    text = text.replace(" ,", ",").replace("( ", "(").replace(" )", ")")
    if "?" in text or "%" in text or "$" in text or ":" in text:
        text = _IN_LIST.sub("IN (?)", text)
        text = _ARRAY.sub("ARRAY[?]", text)
        text = _VALUES.sub(r"\1\2", text)
    return text


def _unquote(name: str) -> str:
    if '"' in name or "`" in name:
        name = name.replace('""', "\0").replace('"', "").replace("`", "").replace("\0", '"')
    return name[:MAX_COLLECTION]


@lru_cache(maxsize=CACHE_SIZE)
def statement(sql: str) -> Statement:
    """What a call of ``sql`` records (see :data:`Statement`), cached."""
    text = normalize(sql)
    operation = None
    collection = None
    first = _FIRST.match(text)
    if first is not None:
        operation = first.group(1).upper()
        if operation in _NAMES_TABLE:
            found = _COLLECTION.search(text)
            if found is not None:
                collection = _unquote(found.group(1))
    if operation is None:
        name = "query"
    elif collection is None:
        name = operation
    else:
        name = f"{operation} {collection}"
    return (text, operation, collection, name, text)


@lru_cache(maxsize=CACHE_SIZE)
def without_text(sql: str) -> Statement:
    """:func:`statement` with no ``TEXT`` (``record_queries = False``), cached."""
    _, operation, collection, name, key = statement(sql)
    return (None, operation, collection, name, key)


def text_of(sql: object) -> str | None:
    """A statement given to a driver as text: ``str`` as it is, ``bytes`` decoded (UTF-8,
    replacing what does not decode), anything else (a composed query object) None."""
    if type(sql) is str:
        return sql
    if isinstance(sql, str):
        return str(sql)
    if isinstance(sql, (bytes, bytearray, memoryview)):
        return bytes(sql).decode("utf-8", "replace")
    return None


#: What a call records when its statement is not text the normalizer can read.
UNKNOWN: Statement = (None, None, None, "query", "")
