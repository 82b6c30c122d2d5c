"""PostgreSQL triggers that make the audit tables append-only below the ORM.

Events: DELETE, TRUNCATE and UPDATE are refused, except the sealer's one-time
filling of empty seal fields (every other column unchanged) and DELETE of
sealed events inside the prune transaction, which sets ``audit.prune`` with
SET LOCAL. Checkpoints: no UPDATE or DELETE at all. TRUNCATE of either table
is refused unless the session sets ``audit.allow_truncate`` (the test suite
does, to reset its database between tests). These stop the application and
careless hands; a database owner can drop a trigger, which is why the chain
and the signed checkpoints exist. Other databases rely on the ORM guards.
"""

from django.db import migrations

EVENT_COLUMNS = (
    "id, occurred_at, event_type, actor_kind, actor_id, actor_display, target_kind, "
    "target_id, target_display, outcome, reason, source_ip, user_agent, request_id, details"
)
NEW_ROW = ", ".join(f"NEW.{c.strip()}" for c in EVENT_COLUMNS.split(","))
OLD_ROW = ", ".join(f"OLD.{c.strip()}" for c in EVENT_COLUMNS.split(","))

INSTALL = f"""
CREATE OR REPLACE FUNCTION audit_event_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF current_setting('audit.prune', true) = 'on' AND OLD.position IS NOT NULL THEN
            RETURN OLD;
        END IF;
    ELSIF OLD.position IS NULL AND OLD.sealed_at IS NULL AND OLD.hash = '' AND OLD.prev_hash = ''
        AND NEW.position IS NOT NULL AND NEW.sealed_at IS NOT NULL
        AND NEW.hash <> '' AND NEW.prev_hash <> ''
        AND ({NEW_ROW}) IS NOT DISTINCT FROM ({OLD_ROW}) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit events are append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE OR REPLACE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('audit.allow_truncate', true) = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER audit_event_guard BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_event_guard();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoint_guard BEFORE UPDATE OR DELETE ON audit_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
"""

UNINSTALL = """
DROP TRIGGER IF EXISTS audit_event_guard ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_checkpoint_guard ON audit_auditcheckpoint;
DROP TRIGGER IF EXISTS audit_checkpoint_no_truncate ON audit_auditcheckpoint;
DROP FUNCTION IF EXISTS audit_event_guard();
DROP FUNCTION IF EXISTS audit_refuse_change();
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(INSTALL, params=None)


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(UNINSTALL, params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0003_checkpoints")]

    operations = [migrations.RunPython(install, uninstall)]
