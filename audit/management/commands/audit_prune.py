from django.core.management.base import BaseCommand

from audit.context import Actor
from audit.services import audit_prune


class Command(BaseCommand):
    help = "Delete sealed audit events older than AUDIT_RETENTION_DAYS (records audit.pruned)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, help="override the retention")

    def handle(self, *args, days=None, **options):
        result = audit_prune(actor=Actor.cli("manage.py audit_prune"), retention_days=days)
        self.stdout.write(
            f"pruned {result.deleted} events; chain anchored at position {result.anchor_position}"
        )
