"""The audit log's machine and actor filters read an ordered index range.

The new indexes are built before the old ones go, so no query is left without
one meanwhile. On a large trail each build holds a write lock on the table for
its duration (about a minute at ten million events).
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0021_event_types_with_passkeys"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(fields=["target_id", "occurred_at"], name="audit_target_time_idx"),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                fields=["actor_kind", "actor_id", "occurred_at"], name="audit_actor_time_idx"
            ),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(("outcome", "failure")),
                fields=["target_id", "occurred_at"],
                name="audit_failure_target_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(("outcome", "failure")),
                fields=["actor_kind", "actor_id", "occurred_at"],
                name="audit_failure_actor_idx",
            ),
        ),
        migrations.RemoveIndex(
            model_name="auditevent",
            name="audit_actor_idx",
        ),
        migrations.RemoveIndex(
            model_name="auditevent",
            name="audit_target_idx",
        ),
    ]
