"""Two PostgreSQL roles: the migration role owns the schema, the runtime role uses it.

The application runs as a role that cannot undo what protects the audit trail:
it owns no table (so it cannot ALTER, DISABLE TRIGGER or DROP), may only SELECT
and INSERT the audit tables, and prunes through ``audit_prune_prefix``, a
SECURITY DEFINER function the migration role owns. ``manage.py migrate``
connects as ``MIGRATION_DATABASE_URL`` when it is set and grants the runtime
role (``DATABASE_URL``'s user) its privileges on every table it creates;
``manage.py db_roles`` creates that role. Without ``MIGRATION_DATABASE_URL``
one role does both: one trust domain, where whoever holds ``DATABASE_URL`` can
drop the triggers.
"""

from __future__ import annotations

from dataclasses import dataclass

import dj_database_url
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

# Insert-only for the runtime role: SELECT and INSERT, nothing else.
AUDIT_TABLES = ("audit_auditevent", "audit_auditseal", "audit_auditcheckpoint")
# Written by the migration role only (the retention floor, the prune marker).
OWNER_ONLY_TABLES = ("audit_retention_floor", "audit_pruning")
# Read to check for unapplied migrations, never written at run time.
READ_ONLY_TABLES = ("django_migrations",)
PRUNE_FUNCTION = "audit_prune_prefix(bigint, jsonb)"


@dataclass(frozen=True)
class RuntimeRole:
    name: str
    password: str = ""


def runtime_role_from_settings() -> RuntimeRole:
    """The role ``DATABASE_URL`` connects as (the application's)."""
    database = settings.DATABASES[DEFAULT_DB_ALIAS]
    return RuntimeRole(name=database.get("USER") or "", password=database.get("PASSWORD") or "")


def migration_role_connect() -> bool:
    """Point the default connection at ``MIGRATION_DATABASE_URL``; False when it is unset.

    For this process only (``migrate``, ``db_roles``): it closes the current
    connection and the next query connects as the migration role.
    """
    url = settings.MIGRATION_DATABASE_URL
    if not url:
        return False
    target = dj_database_url.parse(url)
    connection = connections[DEFAULT_DB_ALIAS]
    connection.close()
    for key in ("NAME", "USER", "PASSWORD", "HOST", "PORT"):
        connection.settings_dict[key] = target.get(key) or ""
    return True


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def runtime_role_create_sql(*, role: RuntimeRole) -> list[str]:
    """Create (or reset) the login role: no superuser, no owner, nothing inherited."""
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    name = quote(role.name)
    statements = [
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = "
        f"{_literal(role.name)}) THEN CREATE ROLE {name} LOGIN; END IF; END $$",
        f"ALTER ROLE {name} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT "
        "NOREPLICATION NOBYPASSRLS",
    ]
    if role.password:
        statements.append(f"ALTER ROLE {name} PASSWORD {_literal(role.password)}")
    return statements


def runtime_role_grants_sql(*, role: RuntimeRole, tables: list[str]) -> list[str]:
    """Least privilege on ``tables`` (this database's), revoking whatever was granted before."""
    connection = connections[DEFAULT_DB_ALIAS]
    quote = connection.ops.quote_name
    name = quote(role.name)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database(), current_schema()")
        database, schema = cursor.fetchone()
    statements = [
        f"GRANT CONNECT ON DATABASE {quote(database)} TO {name}",
        f"GRANT USAGE ON SCHEMA {quote(schema)} TO {name}",
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {quote(schema)} FROM {name}",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {quote(schema)} FROM {name}",
        f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {quote(schema)} FROM {name}",
    ]
    for table in sorted(tables):
        if table in OWNER_ONLY_TABLES:
            continue
        if table in AUDIT_TABLES:
            privileges = "SELECT, INSERT"
        elif table in READ_ONLY_TABLES:
            privileges = "SELECT"
        else:
            privileges = "SELECT, INSERT, UPDATE, DELETE"
        statements.append(f"GRANT {privileges} ON TABLE {quote(table)} TO {name}")
    statements.append(f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {quote(schema)} TO {name}")
    if "audit_auditevent" in tables:
        statements.append(f"GRANT EXECUTE ON FUNCTION {PRUNE_FUNCTION} TO {name}")
    return statements


def runtime_role_grants_apply(*, role: RuntimeRole) -> list[str]:
    """Grant the runtime role its privileges on every table there is now; the SQL run."""
    connection = connections[DEFAULT_DB_ALIAS]
    statements = runtime_role_grants_sql(role=role, tables=connection.introspection.table_names())
    with connection.cursor() as cursor:
        for statement in statements:
            cursor.execute(statement)
    return statements


def retention_floor_set_sql(*, days: int) -> list[str]:
    return [f"UPDATE audit_retention_floor SET days = {int(days):d}"]  # noqa: S608 (an int)
