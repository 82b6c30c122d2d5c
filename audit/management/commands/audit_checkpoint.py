from django.core.management.base import BaseCommand

from audit.services import audit_checkpoint_create


class Command(BaseCommand):
    help = "Sign a checkpoint of the audit chain's current head."

    def handle(self, *args, **options):
        checkpoint = audit_checkpoint_create()
        self.stdout.write(
            f"checkpoint at position {checkpoint.position} ({checkpoint.head_hash}), "
            f"signed by key {checkpoint.key_id}"
        )
