"""``manage.py apply FILE``: make the registry match a YAML or JSON document (GitOps).

Prints JSON: the plan (create, change, enable, disable, unchanged per entry),
whether it was applied, and the secrets of machines it created, shown this once.
``--dry-run`` prints the plan only. The document is read with YAML's safe
loader (JSON is YAML), so it can only hold data. See the README for its format.
"""

from __future__ import annotations

import sys

import yaml
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from clients.api.serializers import ApplyDocumentSerializer
from clients.cache_outcome import cache_failures_collected
from clients.declarative import registry_apply, registry_plan
from clients.management.commands._cli import cache_not_told, cli_actor, dump, refuse, refuse_invalid

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024


def document_load(text: str) -> dict:
    """The document's data, its shape checked; raises ``ValidationError`` on anything else."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError({"document": f"not YAML or JSON: {exc}"}) from None
    checked = ApplyDocumentSerializer(data=data if data is not None else {})
    if not checked.is_valid():
        raise ValidationError({"document": str(dict(checked.errors))})
    return checked.validated_data


class Command(BaseCommand):
    help = "Make scopes, audiences and machines match a YAML or JSON document."

    def add_arguments(self, parser):
        parser.add_argument("file", help="The document; - reads stdin.")
        parser.add_argument(
            "--dry-run", action="store_true", help="Print the plan, change nothing."
        )
        parser.add_argument(
            "--prune", action="store_true", help="Disable live machines the document does not name."
        )

    def handle(self, *args, file: str, dry_run: bool, prune: bool, **options):
        try:
            if file == "-":
                text = sys.stdin.read(MAX_DOCUMENT_BYTES + 1)
            else:
                with open(file, encoding="utf-8") as handle:
                    text = handle.read(MAX_DOCUMENT_BYTES + 1)
        except (OSError, UnicodeDecodeError) as exc:
            raise refuse(f"Cannot read {file}: {exc}") from None
        if len(text) > MAX_DOCUMENT_BYTES:
            raise refuse(f"The document is larger than {MAX_DOCUMENT_BYTES} bytes.")
        with cache_failures_collected() as failures:
            try:
                document = document_load(text)
                if dry_run:
                    plan, secrets = registry_plan(document=document, prune=prune), {}
                else:
                    applied = registry_apply(
                        document=document, actor=cli_actor("apply"), prune=prune
                    )
                    plan, secrets = applied.plan, applied.secrets
            except ValidationError as exc:
                raise refuse_invalid(exc) from exc
        self.stdout.write(
            dump(
                {
                    "applied": not dry_run,
                    "changes": plan.changes,
                    "plan": [step.as_dict() for step in plan.steps],
                    "secrets": secrets,
                }
            )
        )
        if failures:
            raise cache_not_told(failures)
