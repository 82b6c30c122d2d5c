"""``manage.py migrate`` as the migration role, then the runtime role's grants.

With ``MIGRATION_DATABASE_URL`` set, the schema is created and owned by that
role, and the role of ``DATABASE_URL`` gets exactly the privileges of
``identity_portal.database_roles`` on every table, new ones included. Unset,
this is Django's ``migrate`` unchanged (one role, one trust domain).
"""

from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import DEFAULT_DB_ALIAS, connection

from identity_portal.database_roles import (
    migration_role_connect,
    runtime_role_from_settings,
    runtime_role_grants_apply,
)


class Command(DjangoMigrate):
    def handle(self, *args, **options):
        runtime = runtime_role_from_settings()
        if options["database"] != DEFAULT_DB_ALIAS or not migration_role_connect():
            return super().handle(*args, **options)
        super().handle(*args, **options)
        if connection.vendor == "postgresql" and runtime.name:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_user")
                if cursor.fetchone()[0] != runtime.name:
                    runtime_role_grants_apply(role=runtime)
                    if options["verbosity"] >= 1:
                        self.stdout.write(
                            f"Granted the runtime role {runtime.name} its privileges."
                        )
        return None
