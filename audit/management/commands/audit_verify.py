import sys
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from audit.selectors import audit_chain_verify
from audit.witness import witness_files_read


class Command(BaseCommand):
    help = (
        "Walk the audit chain and its signed, chained checkpoints, and compare them with the "
        "witnesses kept outside the database (every configured file witness, or --witness). "
        "Exit 0 when intact, 1 naming the first broken position and checkpoint."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--witness",
            type=Path,
            action="append",
            help="a witness file (JSON Lines) to compare with, instead of the configured ones; "
            "repeatable",
        )

    def handle(self, *args, witness=None, **options):
        try:
            witnesses, notes = witness_files_read(witness)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read the witness: {exc}") from exc
        report = audit_chain_verify(witnesses=witnesses)
        compared = ", ".join(f"{name} ({len(entries)})" for name, entries in witnesses.items())
        summary = (
            f"{report.checked} sealed events from position {report.anchor_position + 1}, "
            f"{report.checkpoints} checkpoints, {report.unsealed} not yet sealed; "
            f"{'compared with ' + compared if compared else 'no witness compared'}"
        )
        for note in notes:
            self.stderr.write(f"note: {note}")
        if report.ok:
            self.stdout.write(f"OK: chain intact up to position {report.head_position} ({summary})")
            return
        self.stderr.write(f"BROKEN at position {report.problem.position}: {report.problem}")
        self.stderr.write(f"checked before the break: {summary}")
        sys.exit(1)
