"""Seals in a table of their own; the audit tables insert-only below the ORM.

Sealing used to UPDATE every event once (a second write of each row and a new
entry in every index). Now an event is written once and the sealer appends an
``AuditSeal`` row. Existing seals move over with their positions and hashes
unchanged, so old exports and checkpoints still verify.

On PostgreSQL the triggers then refuse every UPDATE of events, seals and
checkpoints, every TRUNCATE, every DELETE except inside ``audit_prune_prefix``,
and a seal that does not extend the head. No session setting opens them (the
``audit.prune`` and ``audit.allow_truncate`` escape hatches are gone): pruning
goes through ``audit_prune_prefix``, a SECURITY DEFINER function owned by the
role that runs this migration, which deletes only a sealed prefix older than
the retention floor in ``audit_retention_floor`` (a table the runtime role
cannot write; ``manage.py db_roles`` grants the rest). A role that owns the
tables can still drop a trigger: that is why the chain, the signed
checkpoints and the runtime role of ``db_roles`` exist.

Irreversible: going back would mean rewriting every event row again.
"""

import django.db.models.deletion
from django.db import migrations, models
from django.utils import timezone

from audit import chain

# The audit.services chain lock, taken by the prune function too.
CHAIN_LOCK_KEY = 0x6175646974
# Days the newest pruned event must be older than, whatever the application asks;
# change it as the migration role with `manage.py db_roles --retention-floor-days`.
RETENTION_FLOOR_DAYS = 30

OLD_TRIGGERS = """
DROP TRIGGER IF EXISTS audit_event_guard ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_event_no_truncate ON audit_auditevent;
DROP TRIGGER IF EXISTS audit_checkpoint_guard ON audit_auditcheckpoint;
DROP TRIGGER IF EXISTS audit_checkpoint_no_truncate ON audit_auditcheckpoint;
DROP FUNCTION IF EXISTS audit_event_guard();
DROP FUNCTION IF EXISTS audit_refuse_change();
"""

EVENT_COLUMNS = tuple(name for name in chain.RECORD_FIELDS if name not in ("position", "sealed_at"))


def drop_old_triggers(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(OLD_TRIGGERS, params=None)


def move_seals(apps, schema_editor):
    """Copy every seal over; seal the stragglers an id-ordered sealer would skip."""
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
            "SELECT position, id, prev_hash, hash, sealed_at FROM audit_auditevent "
            "WHERE position IS NOT NULL"
        )
        cursor.execute("SELECT max(position), max(event_id) FROM audit_auditseal")
        head, horizon = cursor.fetchone()
        cursor.execute(
            "SELECT position, head_hash, created_at FROM audit_auditcheckpoint "
            "ORDER BY position DESC, id DESC LIMIT 1"
        )
        checkpoint = cursor.fetchone()
        if checkpoint is not None and checkpoint[0] > (head or 0):
            # Everything up to the signed head was pruned: keep the head as an
            # anchor row without an event, so sealing continues from it.
            cursor.execute(
                "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
                "VALUES (%s, NULL, '', %s, %s)",
                list(checkpoint),
            )
        if horizon is None:
            return
        # The old sealer took unsealed events in any id order; the new one seals
        # above the highest sealed id only. Unsealed events below it get sealed now.
        events = apps.get_model("audit", "AuditEvent").objects.using(connection.alias)
        stragglers = list(
            events.filter(position__isnull=True, id__lt=horizon)
            .order_by("id")
            .values("id", *EVENT_COLUMNS)
        )
        if not stragglers:
            return
        cursor.execute("SELECT position, hash FROM audit_auditseal ORDER BY position DESC LIMIT 1")
        position, prev_hash = cursor.fetchone()
        sealed_at = timezone.now()
        for row in stragglers:
            position += 1
            row.update(position=position, sealed_at=sealed_at)
            digest = chain.event_hash(chain.event_record(row), prev_hash)
            cursor.execute(
                "INSERT INTO audit_auditseal (position, event_id, prev_hash, hash, sealed_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                [
                    position,
                    row["id"],
                    prev_hash,
                    digest,
                    connection.ops.adapt_datetimefield_value(sealed_at),
                ],
            )
            prev_hash = digest


def install_sql(schema: str) -> str:
    path = f"pg_catalog, {schema}, pg_temp"
    return f"""
-- Event ids are drawn once the transaction has its xid, so a sealer that waits
-- for the transactions running at its snapshot knows no lower id can still
-- commit (audit.services._committed_below).
ALTER TABLE audit_auditevent ALTER COLUMN id DROP IDENTITY IF EXISTS;
CREATE SEQUENCE audit_auditevent_id_seq OWNED BY audit_auditevent.id;
SELECT setval('audit_auditevent_id_seq',
              coalesce((SELECT max(id) FROM audit_auditevent), 0) + 1, false);
-- CASE evaluates its condition first: the xid, then the id. No function call.
ALTER TABLE audit_auditevent ALTER COLUMN id SET DEFAULT
    CASE WHEN pg_current_xact_id() IS NOT NULL
        THEN nextval('{schema}.audit_auditevent_id_seq'::regclass) END;

-- Written only by the migration role: the runtime role gets no privilege on either.
CREATE TABLE audit_retention_floor (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    days integer NOT NULL CHECK (days >= 0)
);
INSERT INTO audit_retention_floor (days) VALUES ({RETENTION_FLOOR_DAYS});
CREATE TABLE audit_pruning (xact xid8 PRIMARY KEY);

CREATE FUNCTION audit_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- DELETE passes only inside audit_prune_prefix, which marks its transaction in a
-- table nobody else may write (a session setting would be anyone's to set).
CREATE FUNCTION audit_row_guard() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path = {path} AS $$
BEGIN
    IF TG_OP = 'DELETE'
        AND EXISTS (SELECT 1 FROM audit_pruning WHERE xact = pg_current_xact_id()) THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END $$;

-- Seals extend the head: the new rows are the top of the table and each links to
-- the row before it (hash, and a higher event id: the sealer seals in id order)
-- for an event that exists. Checked once per statement over the inserted rows.
CREATE FUNCTION audit_seals_extend_head() RETURNS trigger LANGUAGE plpgsql
SET search_path = {path} AS $$
DECLARE
    bad record;
BEGIN
    IF (SELECT max(position) FROM audit_auditseal)
        IS DISTINCT FROM (SELECT max(position) FROM audit_new_seals) THEN
        RAISE EXCEPTION 'audit seals only extend the chain: inserted below the head'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    SELECT n.position, n.event_id INTO bad
        FROM audit_new_seals n
        LEFT JOIN audit_auditseal p ON p.position = n.position - 1
        WHERE n.event_id IS NULL
            OR NOT EXISTS (SELECT 1 FROM audit_auditevent e WHERE e.id = n.event_id)
            OR CASE WHEN n.position = 1 THEN n.prev_hash IS DISTINCT FROM '{chain.GENESIS_HASH}'
                ELSE p.position IS NULL OR n.prev_hash IS DISTINCT FROM p.hash
                    OR n.event_id <= coalesce(p.event_id, 0) END
        ORDER BY n.position LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'audit seals only extend the chain: position % (event %) breaks it',
            bad.position, bad.event_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER audit_event_guard BEFORE UPDATE OR DELETE ON audit_auditevent
    FOR EACH ROW EXECUTE FUNCTION audit_row_guard();
CREATE TRIGGER audit_seal_guard BEFORE UPDATE OR DELETE ON audit_auditseal
    FOR EACH ROW EXECUTE FUNCTION audit_row_guard();
CREATE TRIGGER audit_seal_append AFTER INSERT ON audit_auditseal
    REFERENCING NEW TABLE AS audit_new_seals
    FOR EACH STATEMENT EXECUTE FUNCTION audit_seals_extend_head();
CREATE TRIGGER audit_checkpoint_guard BEFORE UPDATE OR DELETE ON audit_auditcheckpoint
    FOR EACH ROW EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_event_no_truncate BEFORE TRUNCATE ON audit_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_seal_no_truncate BEFORE TRUNCATE ON audit_auditseal
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();
CREATE TRIGGER audit_checkpoint_no_truncate BEFORE TRUNCATE ON audit_auditcheckpoint
    FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse_change();

-- Retention: the one way to delete audit rows. The application computes and
-- signs the prune checkpoint (the key is not in the database) and passes it in;
-- this checks what it can and writes it with the deletion.
CREATE FUNCTION audit_prune_prefix(p_up_to bigint, p_checkpoint jsonb) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = {path} AS $$
DECLARE
    up_to_hash text;
    head_position bigint;
    head_hash text;
    floor_days integer;
    too_recent bigint;
    deleted bigint;
    columns text;
BEGIN
    PERFORM pg_advisory_xact_lock({CHAIN_LOCK_KEY});
    SELECT hash INTO up_to_hash FROM audit_auditseal WHERE position = p_up_to;
    IF up_to_hash IS NULL THEN
        RAISE EXCEPTION 'audit prune refused: position % is not sealed', p_up_to
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT position, hash INTO head_position, head_hash
        FROM audit_auditseal ORDER BY position DESC LIMIT 1;
    IF p_checkpoint->>'kind' IS DISTINCT FROM 'prune'
        OR (p_checkpoint->>'position')::bigint IS DISTINCT FROM head_position
        OR p_checkpoint->>'head_hash' IS DISTINCT FROM head_hash
        OR (p_checkpoint->>'anchor_position')::bigint IS DISTINCT FROM p_up_to
        OR p_checkpoint->>'anchor_hash' IS DISTINCT FROM up_to_hash THEN
        RAISE EXCEPTION 'audit prune refused: the checkpoint must anchor at % and sign head %',
            p_up_to, head_position USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT days INTO floor_days FROM audit_retention_floor;
    SELECT s.position INTO too_recent
        FROM audit_auditseal s JOIN audit_auditevent e ON e.id = s.event_id
        WHERE s.position <= p_up_to
            AND e.occurred_at >= now() - make_interval(days => floor_days)
        ORDER BY s.position LIMIT 1;
    IF too_recent IS NOT NULL THEN
        RAISE EXCEPTION 'audit prune refused: position % is within the % day retention floor',
            too_recent, floor_days USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO audit_pruning (xact) VALUES (pg_current_xact_id());
    DELETE FROM audit_auditevent e USING audit_auditseal s
        WHERE s.event_id = e.id AND s.position <= p_up_to;
    GET DIAGNOSTICS deleted = ROW_COUNT;
    -- The seal at p_up_to stays: the anchor the chain continues from.
    DELETE FROM audit_auditseal WHERE position < p_up_to;
    DELETE FROM audit_pruning WHERE xact = pg_current_xact_id();
    SELECT string_agg(quote_ident(key), ', ') INTO columns
        FROM jsonb_object_keys(p_checkpoint) AS key WHERE key <> 'id';
    EXECUTE format(
        'INSERT INTO audit_auditcheckpoint (%1$s) '
        'SELECT %1$s FROM jsonb_populate_record(NULL::audit_auditcheckpoint, $1)', columns
    ) USING p_checkpoint;
    RETURN deleted;
END $$;
REVOKE ALL ON FUNCTION audit_prune_prefix(bigint, jsonb) FROM PUBLIC;
"""  # noqa: S608 (the schema name comes from the server, quoted; no input)


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT quote_ident(current_schema())")
        schema = cursor.fetchone()[0]
    schema_editor.execute(install_sql(schema), params=None)


class Migration(migrations.Migration):
    dependencies = [("audit", "0010_checkpoint_chain")]

    operations = [
        migrations.RunPython(drop_old_triggers, elidable=False),
        migrations.CreateModel(
            name="AuditSeal",
            fields=[
                ("position", models.BigIntegerField(primary_key=True, serialize=False)),
                ("prev_hash", models.CharField(max_length=64)),
                ("hash", models.CharField(max_length=64)),
                ("sealed_at", models.DateTimeField()),
                (
                    "event",
                    models.OneToOneField(
                        db_constraint=False,
                        null=True,
                        on_delete=django.db.models.deletion.DO_NOTHING,
                        related_name="seal",
                        to="audit.auditevent",
                    ),
                ),
            ],
            options={"ordering": ["position"]},
        ),
        migrations.RunPython(move_seals, elidable=False),
        migrations.RemoveIndex(model_name="auditevent", name="audit_unsealed_idx"),
        migrations.RemoveField(model_name="auditevent", name="hash"),
        migrations.RemoveField(model_name="auditevent", name="position"),
        migrations.RemoveField(model_name="auditevent", name="prev_hash"),
        migrations.RemoveField(model_name="auditevent", name="sealed_at"),
        migrations.RunPython(install, elidable=False),
    ]
