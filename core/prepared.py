"""Statements PostgreSQL parses and plans once per connection: the hot path's two.

Django binds parameters on the client (it quotes them into the SQL text) and
turns psycopg's statement preparation off for every connection (for
connection poolers), so each execution is parsed and planned anew. The token
insert (``tokens.services``) and the cold machine lookup
(``clients.machine_cache``) are the same text on every request: bound on the
server and prepared, the token insert measured 222 against 355 us of
PostgreSQL CPU per token. ``DATABASE_PREPARED_STATEMENTS`` turns it off
behind a pooler that cannot keep prepared statements.
"""

from __future__ import annotations

import re

import psycopg
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections


class _PreparedCursor(psycopg.Cursor):
    """A server-binding cursor whose statements are prepared on first use.

    The settings give psycopg's preparation back with a threshold no query
    reaches, and this cursor asks for it explicitly.
    """

    prepare_statements = True

    def execute(self, query, params=None, *, prepare=None, binary=None):
        if prepare is None:
            prepare = self.prepare_statements and settings.DATABASE_PREPARED_STATEMENTS
        return super().execute(query, params, prepare=prepare, binary=binary)


class _PreparedRawCursor(psycopg.RawCursor):
    """The same, for statements written with PostgreSQL's own ``$1`` placeholders.

    psycopg parses a statement's ``%s`` placeholders on every execution when
    the text is longer than 4 KiB (it caches only shorter ones): the cold
    machine lookup is 6 KiB, and that parse cost about a tenth of a
    millisecond of CPU per cold request. A raw cursor sends the text as it is.
    """

    prepare_statements = True

    def execute(self, query, params=None, *, prepare=None, binary=None):
        if prepare is None:
            prepare = self.prepare_statements and settings.DATABASE_PREPARED_STATEMENTS
        return super().execute(query, params, prepare=prepare, binary=binary)


def dollar_placeholders(sql: str) -> str:
    """Django's ``%s`` placeholders as ``$1, $2, ...`` (and ``%%`` as ``%``), for a raw cursor."""
    numbers = iter(range(1, sql.count("%s") + 1))
    return _PLACEHOLDER.sub(lambda m: "%" if m.group() == "%%" else f"${next(numbers)}", sql)


_PLACEHOLDER = re.compile(r"%%|%s")


def prepared_cursor(*, raw: bool = False, db=None):
    """A psycopg cursor that binds parameters on the server, in Django's wrapper.

    PostgreSQL only. ``raw``: the statement uses ``$n`` placeholders
    (``dollar_placeholders``). ``db``: the default connection's wrapper, when
    the caller already holds it. The wrapper keeps Django's query logging and
    execute wrappers; when queries are logged (DEBUG, tests capturing them) the
    statement runs unprepared, since Django's query log cannot show the SQL of
    a prepared execution.
    """
    if db is None:
        # The wrapper itself, looked up once: each use of the module-level proxy looks it
        # up in the thread's connections again (asgiref raises and catches per lookup).
        db = connections[DEFAULT_DB_ALIAS]
    db.ensure_connection()
    cursor = (_PreparedRawCursor if raw else _PreparedCursor)(db.connection)
    if db.queries_logged:
        cursor.prepare_statements = False
        return db.make_debug_cursor(cursor)
    return db.make_cursor(cursor)
