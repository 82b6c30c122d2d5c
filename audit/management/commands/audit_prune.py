from django.core.management.base import BaseCommand, CommandError

from audit.context import Actor
from audit.services import AuditPruneRefused, audit_prune


class Command(BaseCommand):
    help = "Delete sealed audit events older than AUDIT_RETENTION_DAYS (records audit.pruned)."

    def add_arguments(self, parser):
        parser.add_argument("--days", type=int, default=None, help="override the retention")

    def handle(self, *args, days=None, **options):
        try:
            result = audit_prune(actor=Actor.cli("manage.py audit_prune"), retention_days=days)
        except AuditPruneRefused as exc:
            raise CommandError(f"{exc}; nothing was deleted") from exc
        self.stdout.write(
            f"pruned {result.deleted} events; chain anchored at position {result.anchor_position}"
        )
