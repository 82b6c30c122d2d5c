"""Pin the toolkit's Application columns the portal does not use (clients.models.TOOLKIT_PINNED_COLUMNS).

Rows are first set to the pinned values: nothing reads these columns, so a
value found there (a toolkit secret, a redirect URI) only misled a reader.
"""

from django.conf import settings
from django.db import migrations, models

PINNED = {
    "client_type": "confidential",
    "authorization_grant_type": "client-credentials",
    "client_secret": "",
    "hash_client_secret": False,
    "redirect_uris": "",
    "post_logout_redirect_uris": "",
    "allowed_origins": "",
    "skip_authorization": False,
    "algorithm": "",
    "registration_source": "manual",
    "user": None,
    "cimd_expires_at": None,
}


def pin(apps, schema_editor):
    Machine = apps.get_model("clients", "Machine")
    Machine.objects.update(**PINNED)


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0002_clientsecret_digest_version"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(pin, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("client_type", "confidential")),
                name="machine_unused_client_type",
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("authorization_grant_type", "client-credentials")),
                name="machine_unused_authorization_grant_type",
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("client_secret", "")), name="machine_unused_client_secret"
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("hash_client_secret", False)),
                name="machine_unused_hash_client_secret",
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("redirect_uris", "")), name="machine_unused_redirect_uris"
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("post_logout_redirect_uris", "")),
                name="machine_unused_post_logout_redirect_uris",
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("allowed_origins", "")), name="machine_unused_allowed_origins"
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("skip_authorization", False)),
                name="machine_unused_skip_authorization",
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("algorithm", "")), name="machine_unused_algorithm"
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("registration_source", "manual")),
                name="machine_unused_registration_source",
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("user__isnull", True)), name="machine_unused_user"
            ),
        ),
        migrations.AddConstraint(
            model_name="machine",
            constraint=models.CheckConstraint(
                condition=models.Q(("cimd_expires_at__isnull", True)),
                name="machine_unused_cimd_expires_at",
            ),
        ),
    ]
