import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.api.serializers import AuditFilterSerializer
from audit.context import Actor
from audit.services import EXPORT_FORMATS, audit_export, manifest_path_for


class Command(BaseCommand):
    help = "Export sealed audit events (CSV or JSON Lines) with a signed manifest."

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=EXPORT_FORMATS, required=True)
        parser.add_argument("--out", type=Path, required=True)
        parser.add_argument("--since", help="ISO-8601 time, inclusive")
        parser.add_argument("--until", help="ISO-8601 time, exclusive")
        parser.add_argument("--type", action="append", dest="types", help="event type, repeatable")
        parser.add_argument("--actor", help="kind:id or id")
        parser.add_argument("--machine", help="machine id (as actor or target)")
        parser.add_argument("--outcome", choices=["success", "failure"])

    def handle(self, *args, **options):
        raw = {
            "since": options["since"],
            "until": options["until"],
            "type": options["types"],
            "actor": options["actor"],
            "machine": options["machine"],
            "outcome": options["outcome"],
        }
        query = AuditFilterSerializer(data={k: v for k, v in raw.items() if v})
        if not query.is_valid():
            raise CommandError(f"bad filters: {dict(query.errors)}")
        out = options["out"]
        manifest = audit_export(
            fmt=options["format"],
            filters=query.filters(),
            out_path=out,
            actor=Actor.cli("manage.py audit_export"),
        )
        sys.stdout.write(
            f"exported {manifest['count']} events to {out}; manifest {manifest_path_for(out)}\n"
        )
