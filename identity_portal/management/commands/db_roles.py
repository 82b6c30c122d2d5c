"""``manage.py db_roles``: create the least-privilege runtime role (PostgreSQL).

Run it as the migration role (``MIGRATION_DATABASE_URL``, or a ``DATABASE_URL``
that owns the tables). It prints the SQL, or runs it with ``--execute``.
"""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from identity_portal.database_roles import (
    RuntimeRole,
    migration_role_connect,
    retention_floor_set_sql,
    runtime_role_create_sql,
    runtime_role_from_settings,
    runtime_role_grants_sql,
)


class Command(BaseCommand):
    help = (
        "Create the PostgreSQL runtime role: DML on ordinary tables, only SELECT and INSERT "
        "on the audit tables, EXECUTE on the prune function, owner of nothing."
    )

    def add_arguments(self, parser):
        parser.add_argument("--runtime-role", help="role name (default: the user of DATABASE_URL)")
        parser.add_argument(
            "--password", help="login password (default: the password of DATABASE_URL)"
        )
        parser.add_argument(
            "--retention-floor-days",
            type=int,
            help="days a pruned event must be older than, whatever the application asks",
        )
        parser.add_argument("--execute", action="store_true", help="run the SQL, not print it")

    def handle(self, *args, runtime_role=None, password=None, **options):
        runtime = runtime_role_from_settings()
        migration = migration_role_connect()
        if connection.vendor != "postgresql":
            raise CommandError(
                "db_roles is for PostgreSQL; the embedded SQLite tier has one trust domain."
            )
        role = RuntimeRole(
            name=runtime_role or runtime.name,
            password=password if password is not None else runtime.password,
        )
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_user")
            current = cursor.fetchone()[0]
        if not role.name or role.name == current:
            raise CommandError(
                f"the runtime role must differ from the migration role ({current}): give "
                "--runtime-role, or set MIGRATION_DATABASE_URL beside DATABASE_URL"
            )
        statements = [
            *runtime_role_create_sql(role=role),
            *runtime_role_grants_sql(role=role, tables=connection.introspection.table_names()),
        ]
        floor = options["retention_floor_days"]
        if floor is not None:
            if floor < 0:
                raise CommandError("--retention-floor-days must be 0 or more")
            statements += retention_floor_set_sql(days=floor)
        if not options["execute"]:
            # Printed without the password: a terminal or a CI log is no place for it.
            shown = [s for s in statements if " PASSWORD " not in s]
            self.stdout.write(";\n".join(shown) + ";")
            if role.password:
                self.stdout.write(
                    f"-- then set its password: \\password {role.name} in psql, or use --execute"
                )
            return
        with transaction.atomic(), connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
        self.stdout.write(
            f"runtime role {role.name} ready"
            + (" (connected through MIGRATION_DATABASE_URL)" if migration else "")
        )
