"""First-run setup, run by ``make run`` before serving; safe to run again."""

from django.core.management.base import BaseCommand

from identity_portal.services import (
    first_admin_ensure,
    first_signing_key_ensure,
    metrics_registry_ensure,
    portal_scopes_ensure,
)


class Command(BaseCommand):
    help = (
        "Create what a fresh installation needs (first console admin, first signing key, "
        "the portal's own scopes)."
    )

    def handle(self, *args, **options):
        admin = first_admin_ensure()
        if admin is not None:
            self.stdout.write(
                "First console admin created. Sign in at /console/ and change the password.\n"
                f"  username: {admin.username}\n"
                f"  password: {admin.password}   (shown once; it is not stored in clear)"
            )
        else:
            self.stdout.write("Console admin exists; nothing to create.")
        key = first_signing_key_ensure()
        if key is not None:
            self.stdout.write(f"First signing key created: {key.algorithm} kid={key.kid}")
        else:
            self.stdout.write("Signing key exists; nothing to create.")
        created = portal_scopes_ensure()
        if created:
            self.stdout.write(f"Scopes created: {', '.join(created)}")
        created = metrics_registry_ensure()
        if created:
            self.stdout.write(f"For /metrics scrapers: created {' and '.join(created)}.")
        else:
            self.stdout.write("Metrics scope and audience exist; nothing to create.")
