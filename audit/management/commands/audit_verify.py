import sys

from django.core.management.base import BaseCommand

from audit.selectors import audit_chain_verify


class Command(BaseCommand):
    help = (
        "Walk the audit chain and its signed checkpoints. Exit 0 when intact, 1 naming "
        "the first broken position."
    )

    def handle(self, *args, **options):
        report = audit_chain_verify()
        summary = (
            f"{report.checked} sealed events from position {report.anchor_position + 1}, "
            f"{report.checkpoints} checkpoints, {report.unsealed} not yet sealed"
        )
        if report.ok:
            self.stdout.write(f"OK: chain intact up to position {report.head_position} ({summary})")
            return
        self.stderr.write(f"BROKEN at position {report.problem.position}: {report.problem}")
        self.stderr.write(f"checked before the break: {summary}")
        sys.exit(1)
