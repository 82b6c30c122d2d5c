"""manage.py db_roles: the least-privilege runtime role's SQL."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command
from django.db import connection


@pytest.mark.postgres
def test_the_runtime_role_gets_insert_only_audit_tables_and_owns_nothing(db, capsys):
    call_command("db_roles", runtime_role="mip_app", password="s3cret-pw")

    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "s3cret-pw" not in out
    assert 'GRANT SELECT, INSERT ON TABLE "audit_auditevent" TO "mip_app";' in lines
    assert 'GRANT SELECT, INSERT ON TABLE "audit_auditseal" TO "mip_app";' in lines
    assert 'GRANT SELECT, INSERT ON TABLE "audit_auditcheckpoint" TO "mip_app";' in lines
    assert 'GRANT SELECT ON TABLE "django_migrations" TO "mip_app";' in lines
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "clients_machine" TO "mip_app";' in lines
    assert 'GRANT EXECUTE ON FUNCTION audit_prune_prefix(bigint, jsonb) TO "mip_app";' in lines
    assert not [line for line in lines if "audit_retention_floor" in line]
    assert not [line for line in lines if "audit_pruning" in line]
    assert (
        'ALTER ROLE "mip_app" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT '
        "NOREPLICATION NOBYPASSRLS;" in lines
    )
    assert lines[-1] == "-- then set its password: \\password mip_app in psql, or use --execute"


@pytest.mark.postgres
def test_the_runtime_role_must_not_be_the_migration_role(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_user")
        owner = cursor.fetchone()[0]

    with pytest.raises(CommandError, match="must differ from the migration role"):
        call_command("db_roles", runtime_role=owner)


def test_sqlite_has_one_trust_domain(db):
    if connection.vendor != "sqlite":
        pytest.skip("the embedded tier's answer")

    with pytest.raises(CommandError, match="one trust domain"):
        call_command("db_roles", runtime_role="mip_app")
