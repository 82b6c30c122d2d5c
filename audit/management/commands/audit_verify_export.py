import sys
from pathlib import Path

from django.core.management.base import BaseCommand

from audit import chain


class Command(BaseCommand):
    help = (
        "Verify an audit export and its signed manifest without the database "
        "(the same check as scripts/verify_audit_export.py)."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("export", type=Path)
        parser.add_argument("--manifest", type=Path)
        parser.add_argument("--jwks", type=Path)
        parser.add_argument("--witness", type=Path, action="append", default=[])

    def handle(self, *args, export, manifest=None, jwks=None, witness=(), **options):
        argv = [str(export)]
        if manifest:
            argv += ["--manifest", str(manifest)]
        if jwks:
            argv += ["--jwks", str(jwks)]
        for path in witness:
            argv += ["--witness", str(path)]
        status = chain.main(argv)
        if status:
            sys.exit(status)
