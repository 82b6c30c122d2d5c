from django.core.management.base import BaseCommand

from audit.services import audit_seal_pending


class Command(BaseCommand):
    help = "Seal every committed unsealed audit event into the hash chain."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, default=None)

    def handle(self, *args, batch_size=None, **options):
        sealed = audit_seal_pending(batch_size=batch_size)
        self.stdout.write(f"sealed {sealed} events")
