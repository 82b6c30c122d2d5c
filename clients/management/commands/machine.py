"""``manage.py machine``: register machines and manage their credentials from scripts.

Prints JSON on stdout. The raw secret appears exactly once, in the output of
``create`` (only when the machine may use a secret method) or ``rotate-secret``.
Every change is audited with actor kind ``cli``.
When the change is saved but the cache could not be told (a revoked secret or
a disabled machine may keep working elsewhere for a while), the JSON is still
printed, stderr says so and the exit status is 3.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from clients.auth_methods import auth_methods_supported
from clients.cache_outcome import cache_failures_collected
from clients.constants import DEFAULT_AUTH_METHODS
from clients.management.commands._cli import (
    cache_not_told,
    cli_actor,
    dump,
    refuse,
    refuse_invalid,
)
from clients.models import ClientSecret, Machine
from clients.selectors import machine_get, machine_list, secret_expiry, secret_get_by_prefix
from clients.services import (
    machine_disable,
    machine_enable,
    machine_register,
    secret_revoke,
    secret_rotate,
)


def _machine_json(machine: Machine) -> dict:
    return {
        "client_id": machine.client_id,
        "name": machine.name,
        "subject": str(machine.subject),
        "enabled": machine.enabled,
        "owner_team": machine.owner_team,
        "owner_email": machine.owner_email,
        "tags": machine.tags,
        "scopes": sorted(scope.name for scope in machine.allowed_scopes.all()),
        "default_scopes": sorted(scope.name for scope in machine.default_scopes.all()),
        "audiences": sorted(audience.uri for audience in machine.allowed_audiences.all()),
        "default_audience": machine.default_audience.uri if machine.default_audience else None,
        "access_token_ttl": machine.access_token_ttl,
        "ip_allowlist": machine.ip_allowlist,
        "auth_methods": list(machine.auth_methods),
        "last_used_at": machine.last_used_at.isoformat() if machine.last_used_at else None,
    }


def _secret_json(secret: ClientSecret, machine: Machine) -> dict:
    expiry = secret_expiry(secret=secret, machine=machine)
    return {
        "id": secret.pk,
        "display": f"{secret.display_prefix}…{secret.last_four}",
        "created_at": secret.created_at.isoformat(),
        "expires_at": expiry.isoformat() if expiry else None,
        "revoked_at": secret.revoked_at.isoformat() if secret.revoked_at else None,
        "last_used_at": secret.last_used_at.isoformat() if secret.last_used_at else None,
    }


class Command(BaseCommand):
    help = "Register machines and manage their secrets (JSON on stdout)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)

        create = actions.add_parser("create", help="Register a machine; prints its first secret.")
        create.add_argument("--name", required=True)
        create.add_argument("--scope", action="append", default=[], dest="scopes")
        create.add_argument("--default-scope", action="append", default=[], dest="default_scopes")
        create.add_argument("--audience", action="append", default=[], dest="audiences")
        create.add_argument("--default-audience", default=None)
        create.add_argument("--ttl", type=int, default=600, help="Access-token lifetime, seconds.")
        create.add_argument("--owner", default="", help="Owner contact email.")
        create.add_argument("--team", default="", help="Owner team.")
        create.add_argument("--description", default="")
        create.add_argument("--tag", action="append", default=[], dest="tags")
        create.add_argument("--ip", action="append", default=[], dest="ip_allowlist")
        create.add_argument(
            "--auth-method",
            action="append",
            default=[],
            dest="auth_methods",
            metavar="METHOD",
            help=f"Repeatable: {', '.join(auth_methods_supported())}; "
            f"default: {' and '.join(DEFAULT_AUTH_METHODS)}. A secret is made only for a "
            "secret method.",
        )

        rotate = actions.add_parser("rotate-secret", help="New secret; the old one has a grace.")
        rotate.add_argument("client_id")
        rotate.add_argument("--grace", type=int, default=None, help="Seconds; default: policy.")

        revoke = actions.add_parser("revoke-secret", help="Revoke one secret now.")
        revoke.add_argument("client_id")
        revoke.add_argument("prefix", help="The secret's display prefix, e.g. mip_cs_AbCd.")

        for name in ("disable", "enable"):
            actions.add_parser(name).add_argument("client_id")

        listing = actions.add_parser("list", help="All machines and their secrets' metadata.")
        listing.add_argument("--include-deleted", action="store_true")

    def handle(self, *args, action: str, **options):
        actor = cli_actor(f"machine {action}")
        with cache_failures_collected() as failures:
            try:
                result = getattr(self, "_" + action.replace("-", "_"))(actor, options)
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

    def _create(self, actor, options):
        machine, raw = machine_register(
            actor=actor,
            name=options["name"],
            description=options["description"],
            owner_team=options["team"],
            owner_email=options["owner"],
            tags=options["tags"],
            scopes=options["scopes"],
            default_scopes=options["default_scopes"],
            audiences=options["audiences"],
            default_audience=options["default_audience"],
            access_token_ttl=options["ttl"],
            ip_allowlist=options["ip_allowlist"],
            auth_methods=options["auth_methods"] or DEFAULT_AUTH_METHODS,
        )
        result = _machine_json(machine)
        if raw is not None:
            result["client_secret"] = raw
        return result

    def _rotate_secret(self, actor, options):
        machine = self._machine(options["client_id"])
        secret, raw = secret_rotate(actor=actor, machine=machine, grace=options["grace"])
        secrets = [_secret_json(row, machine) for row in machine.secrets.all()]
        return {
            "client_id": machine.client_id,
            "client_secret": raw,
            "secret": _secret_json(secret, machine),
            "secrets": secrets,
        }

    def _revoke_secret(self, actor, options):
        machine = self._machine(options["client_id"])
        prefix = options["prefix"].split("…")[0]
        try:
            secret = secret_get_by_prefix(machine=machine, prefix=prefix)
        except ClientSecret.DoesNotExist:
            # Never echo the argument: it may be a raw secret pasted by mistake.
            raise refuse("No secret of this machine starts with the given prefix.") from None
        except ClientSecret.MultipleObjectsReturned:
            raise refuse("Several secrets start with the given prefix: give more.") from None
        secret = secret_revoke(actor=actor, secret=secret)
        return {"client_id": machine.client_id, "revoked": _secret_json(secret, machine)}

    def _disable(self, actor, options):
        machine = machine_disable(actor=actor, machine=self._machine(options["client_id"]))
        return {"client_id": machine.client_id, "enabled": machine.enabled}

    def _enable(self, actor, options):
        machine = machine_enable(actor=actor, machine=self._machine(options["client_id"]))
        return {"client_id": machine.client_id, "enabled": machine.enabled}

    def _list(self, actor, options):
        machines = machine_list(include_deleted=options["include_deleted"]).prefetch_related(
            "secrets"
        )
        return [
            {
                **_machine_json(machine),
                "secrets": [_secret_json(row, machine) for row in machine.secrets.all()],
            }
            for machine in machines
        ]
