"""Bind every existing secret digest to its machine (``clients.credentials``, version 1).

Earlier digests were ``HMAC(pepper, secret)``: a row moved to another machine
kept working there. The secret is not known here, so each digest is bound by
wrapping it: ``HMAC(pepper, "mip-cs-v1w" 0x00 client_id 0x00 digest)``. From
this migration on no unbound digest verifies; new secrets use version 2.

A row whose pepper is no longer configured could not verify before and cannot
be bound now: it keeps its old digest under version 1 and verifies nothing.
There is no way back (unwrapping needs the secret): reversing only drops the
column, and the wrapped digests then verify nothing on the earlier release.
"""

import hashlib
import hmac

from django.conf import settings
from django.db import migrations, models


def _bind(pepper: bytes, client_id: str, digest: str) -> str:
    # Must equal clients.credentials.secret_digest_legacy_bind (a test holds them equal).
    message = b"\x00".join((b"mip-cs-v1w", client_id.encode("utf-8"), digest.encode()))
    return hmac.new(pepper, message, hashlib.sha256).hexdigest()


def bind_digests(apps, schema_editor):
    ClientSecret = apps.get_model("clients", "ClientSecret")
    peppers = settings.SERVER_SECRETS.peppers
    rows = ClientSecret.objects.select_related("machine").filter(digest_version=0)
    for row in rows.iterator(chunk_size=1000):
        pepper = peppers.get(row.pepper_id)
        if pepper is not None:
            row.digest = _bind(pepper, row.machine.client_id, row.digest)
        row.digest_version = 1
        row.save(update_fields=["digest", "digest_version"])


class Migration(migrations.Migration):
    dependencies = [("clients", "0001_initial")]

    operations = [
        # 0 marks the rows still to bind; none is left at 0 when the migration ends.
        migrations.AddField(
            model_name="clientsecret",
            name="digest_version",
            field=models.PositiveSmallIntegerField(default=0),
            preserve_default=False,
        ),
        migrations.RunPython(bind_digests, migrations.RunPython.noop, elidable=False),
        migrations.AlterField(
            model_name="clientsecret",
            name="digest_version",
            field=models.PositiveSmallIntegerField(default=2),
        ),
    ]
