"""``manage.py trust``: federation trusts of machines (workload identity federation).

``add`` lets tokens of an external issuer act as a machine, ``list`` shows
them, ``remove`` withdraws one. JSON on stdout; every change audited with
actor kind ``cli``; refused input exits 2 and changes nothing; a change the
cache could not be told about exits 3 after printing its JSON (see ``machine``).

Templates fill in the issuer, subject and condition of a platform::

    trust add CLIENT_ID --template github --repository acme/billing --ref refs/heads/main \\
        --audience https://portal.example
    trust add CLIENT_ID --template kubernetes --issuer https://k8s.example \\
        --namespace billing --service-account invoicer --audience https://portal.example \\
        [--jwks cluster-jwks.json]
"""

from __future__ import annotations

from pathlib import Path

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from clients.cache_outcome import cache_failures_collected
from clients.federation.selectors import trust_get, trust_is_authentic, trust_list
from clients.federation.services import MAX_JWKS_LENGTH, trust_add, trust_remove
from clients.federation.templates import TEMPLATES, TemplateError, trust_fields_from_template
from clients.management.commands._cli import (
    cache_not_told,
    cli_actor,
    dump,
    refuse,
    refuse_invalid,
)
from clients.models import FederationTrust, Machine
from clients.selectors import machine_get


def trust_json(trust: FederationTrust) -> dict:
    return {
        "trust_id": str(trust.uid),
        "client_id": trust.machine.client_id,
        "issuer": trust.issuer,
        "audience": trust.audience,
        "subject": trust.subject,
        "condition": trust.condition,
        "pasted_jwks": bool(trust.jwks),
        "template": trust.template,
        "description": trust.description,
        "created_at": trust.created_at.isoformat(),
        "created_by": trust.created_by,
        # A row that fails its binding (written outside the portal) admits nothing.
        "authentic": trust_is_authentic(trust),
    }


class Command(BaseCommand):
    help = "Manage the federation trusts of machines (JSON on stdout)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)

        add = actions.add_parser("add", help="Let an external issuer's tokens act as a machine.")
        add.add_argument("client_id")
        add.add_argument("--issuer", default=None, help="The tokens' iss (an https:// URL).")
        add.add_argument("--audience", required=True, help="The aud the tokens must carry.")
        add.add_argument("--subject", default=None, help="The exact sub the tokens must carry.")
        add.add_argument("--condition", default=None, help="A CEL expression over claims.")
        add.add_argument("--jwks", default=None, help="A file with the issuer's JWKS.")
        add.add_argument("--description", default="")
        add.add_argument("--template", choices=sorted(TEMPLATES), default=None)
        add.add_argument("--repository", help="github: OWNER/REPO.")
        add.add_argument("--project-path", help="gitlab: GROUP/PROJECT.")
        add.add_argument("--ref", help="github: refs/heads/main; gitlab: main.")
        add.add_argument("--environment", help="github, gitlab: the deployment environment.")
        add.add_argument("--namespace", help="kubernetes: the service account's namespace.")
        add.add_argument("--service-account", help="kubernetes: the service account's name.")

        listing = actions.add_parser("list", help="The trusts of one machine, or of all.")
        listing.add_argument("client_id", nargs="?", default=None)

        remove = actions.add_parser("remove", help="Withdraw a trust at once.")
        remove.add_argument("trust_id")

    def handle(self, *args, action: str, **options):
        actor = cli_actor(f"trust {action}")
        with cache_failures_collected() as failures:
            try:
                result = getattr(self, "_" + action)(actor, options)
            except ValidationError as exc:
                raise refuse_invalid(exc) from exc
        self.stdout.write(dump(result))
        if failures:
            raise cache_not_told(failures)

    def _machine(self, client_id: str) -> Machine:
        try:
            return machine_get(client_id=client_id)
        except Machine.DoesNotExist:
            raise refuse(f"No machine with client_id {client_id!r}.") from None

    def _jwks(self, path: str | None) -> str | None:
        if path is None:
            return None
        try:
            with Path(path).open(encoding="utf-8") as handle:
                text = handle.read(MAX_JWKS_LENGTH + 1)
        except (OSError, UnicodeError) as exc:
            raise refuse(f"Cannot read the JWKS file: {exc}") from exc
        return text

    def _add(self, actor, options):
        machine = self._machine(options["client_id"])
        issuer, subject, condition = options["issuer"], options["subject"], options["condition"]
        if options["template"]:
            try:
                issuer, subject, condition = trust_fields_from_template(
                    options["template"],
                    issuer=issuer,
                    subject=subject,
                    condition=condition,
                    repository=options["repository"],
                    project_path=options["project_path"],
                    ref=options["ref"],
                    environment=options["environment"],
                    namespace=options["namespace"],
                    service_account=options["service_account"],
                )
            except TemplateError as exc:
                raise refuse(str(exc)) from exc
        if not issuer:
            raise refuse("--issuer is required (or a --template that names it).")
        trust = trust_add(
            actor=actor,
            machine=machine,
            issuer=issuer,
            audience=options["audience"],
            subject=subject or "",
            condition=condition or "",
            jwks=self._jwks(options["jwks"]),
            template=options["template"] or "",
            description=options["description"],
        )
        return trust_json(trust)

    def _list(self, actor, options):
        machine = self._machine(options["client_id"]) if options["client_id"] else None
        return [trust_json(trust) for trust in trust_list(machine=machine)]

    def _remove(self, actor, options):
        try:
            trust = trust_get(trust_id=options["trust_id"])
        except (FederationTrust.DoesNotExist, ValidationError, ValueError):
            raise refuse(f"No trust with id {options['trust_id']!r}.") from None
        summary = trust_json(trust)
        trust_remove(actor=actor, trust=trust)
        return {**summary, "removed": True}
