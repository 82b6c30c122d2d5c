"""``manage.py machine``: register machines and manage their credentials from scripts.

Prints JSON on stdout. The raw secret appears exactly once, in the output of
``create`` (only when the machine may use a secret method) or ``rotate-secret``.
Every change is audited with actor kind ``cli``.
When the change is saved but the cache could not be told (a revoked secret or
a disabled machine may keep working elsewhere for a while), the JSON is still
printed, stderr says so and the exit status is 3.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from clients.auth_methods import auth_methods_supported
from clients.cache_outcome import cache_failures_collected
from clients.choices import StaleAction
from clients.constants import DEFAULT_AUTH_METHODS
from clients.management.commands._cli import (
    cache_not_told,
    cli_actor,
    dump,
    refuse,
    refuse_invalid,
)
from clients.models import ClientKey, ClientSecret, Machine
from clients.selectors import machine_get, machine_list, secret_expiry, secret_get_by_prefix
from clients.services import (
    MAX_JWK_BYTES,
    client_key_add,
    client_key_remove,
    machine_disable,
    machine_enable,
    machine_register,
    machine_update,
    secret_create,
    secret_revoke,
    secret_rotate,
)


def _optional_int(value: str) -> int | str:
    """An integer, or "" for "the default" (stored as empty)."""
    return "" if value == "" else int(value)


def _aware_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "an ISO 8601 time, e.g. 2026-06-01T12:00:00+00:00"
        ) from None
    if parsed.tzinfo is None:
        raise argparse.ArgumentTypeError("give the time zone, e.g. +00:00")
    return parsed


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
        "jwks_uri": machine.jwks_uri or None,
        "keys": [_key_json(key) for key in machine.keys.all()],
        "last_used_at": machine.last_used_at.isoformat() if machine.last_used_at else None,
        "max_secret_age": machine.max_secret_age,
        "secret_warning_period": machine.secret_warning_period,
        "rotation_grace": machine.rotation_grace,
        "stale_action": machine.stale_action,
    }


def _key_json(key: ClientKey) -> dict:
    return {
        "kid": key.kid,
        "thumbprint": key.thumbprint,
        "kty": key.public_jwk.get("kty"),
        "alg": key.public_jwk.get("alg"),
        "created_at": key.created_at.isoformat(),
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
        "not_before": secret.not_before.isoformat() if secret.not_before else None,
        "max_uses": secret.max_uses,
        "use_count": secret.use_count,
        "expired_at": secret.expired_at.isoformat() if secret.expired_at else None,
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

        create.add_argument("--jwks-uri", default="", help="private_key_jwt: the machine's JWKS.")

        add_key = actions.add_parser(
            "add-key", help="Register a public JWK for private_key_jwt (at most two)."
        )
        add_key.add_argument("client_id")
        add_key.add_argument("--jwk", required=True, help="A file holding one public JWK (JSON).")

        remove_key = actions.add_parser("remove-key", help="Remove a registered key now.")
        remove_key.add_argument("client_id")
        remove_key.add_argument("kid")

        jwks_uri = actions.add_parser(
            "set-jwks-uri", help="Where the machine publishes its keys ('' clears it)."
        )
        jwks_uri.add_argument("client_id")
        jwks_uri.add_argument("url")

        update = actions.add_parser(
            "update",
            help="Change a machine's settings; each option given replaces that setting.",
        )
        update.add_argument("client_id")
        update.add_argument("--name")
        update.add_argument("--scope", action="append", dest="scopes", help="Repeat; replaces.")
        update.add_argument("--default-scope", action="append", dest="default_scopes")
        update.add_argument("--audience", action="append", dest="audiences", help="Repeat.")
        update.add_argument("--default-audience")
        update.add_argument("--ttl", type=int, help="Access-token lifetime, seconds.")
        update.add_argument("--ip", action="append", dest="ip_allowlist", help="CIDR; repeat.")
        update.add_argument(
            "--any-ip", action="store_true", help="Clear the allow-list: any source address."
        )
        update.add_argument("--owner", help="Owner contact email.")
        update.add_argument("--team", help="Owner team.")
        update.add_argument("--description")

        rotate = actions.add_parser("rotate-secret", help="New secret; the old one has a grace.")
        rotate.add_argument("client_id")
        rotate.add_argument("--grace", type=int, default=None, help="Seconds; default: policy.")

        add = actions.add_parser(
            "add-secret", help="A second secret (e.g. a bootstrap one); prints it once."
        )
        add.add_argument("client_id")
        add.add_argument("--uses", type=int, default=None, help="Authenticates at most N times.")
        add.add_argument(
            "--not-before", type=_aware_time, default=None, help="ISO 8601 time with its zone."
        )

        policy = actions.add_parser(
            "policy", help="Set the machine's lifecycle policy (empty value: the default)."
        )
        policy.add_argument("client_id")
        policy.add_argument("--max-secret-age", type=_optional_int, help="Seconds; 0: never.")
        policy.add_argument("--warning-period", type=_optional_int, help="Seconds.")
        policy.add_argument("--rotation-grace", type=int, help="Seconds.")
        policy.add_argument("--stale-action", choices=["", *StaleAction.values])

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
            jwks_uri=options["jwks_uri"],
        )
        result = _machine_json(machine)
        if raw is not None:
            result["client_secret"] = raw
        return result

    def _add_key(self, actor, options):
        machine = self._machine(options["client_id"])
        try:
            with open(options["jwk"], encoding="utf-8") as handle:
                text = handle.read(MAX_JWK_BYTES + 1)
        except OSError as exc:
            raise refuse(f"Cannot read {options['jwk']!r}: {exc.strerror}.") from None
        try:
            jwk = json.loads(text)
        except (ValueError, RecursionError):
            # Never echo the content: it may be a private key given by mistake.
            raise refuse("The file does not hold a JSON JWK.") from None
        key = client_key_add(actor=actor, machine=machine, jwk=jwk)
        return {"client_id": machine.client_id, "added": _key_json(key)}

    def _remove_key(self, actor, options):
        machine = self._machine(options["client_id"])
        try:
            removed = client_key_remove(actor=actor, machine=machine, kid=options["kid"])
        except ClientKey.DoesNotExist:
            raise refuse("The machine has no key with this kid.") from None
        return {"client_id": machine.client_id, "removed": removed}

    def _set_jwks_uri(self, actor, options):
        machine = machine_update(
            actor=actor, machine=self._machine(options["client_id"]), jwks_uri=options["url"]
        )
        return {"client_id": machine.client_id, "jwks_uri": machine.jwks_uri or None}

    # update's options and the machine_update argument each one sets.
    _UPDATE_OPTIONS = {
        "name": "name",
        "scopes": "scopes",
        "default_scopes": "default_scopes",
        "audiences": "audiences",
        "default_audience": "default_audience",
        "ttl": "access_token_ttl",
        "ip_allowlist": "ip_allowlist",
        "owner": "owner_email",
        "team": "owner_team",
        "description": "description",
    }

    def _update(self, actor, options):
        if options["any_ip"] and options["ip_allowlist"]:
            raise refuse("Give --ip or --any-ip, not both.")
        changes = {
            argument: options[option]
            for option, argument in self._UPDATE_OPTIONS.items()
            if options[option] is not None
        }
        if options["any_ip"]:
            changes["ip_allowlist"] = []
        if not changes:
            raise refuse("Nothing to change: give at least one option (see --help).")
        machine = machine_update(
            actor=actor, machine=self._machine(options["client_id"]), **changes
        )
        return _machine_json(machine)

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

    def _add_secret(self, actor, options):
        machine = self._machine(options["client_id"])
        secret, raw = secret_create(
            actor=actor,
            machine=machine,
            max_uses=options["uses"],
            not_before=options["not_before"],
        )
        return {
            "client_id": machine.client_id,
            "client_secret": raw,
            "secret": _secret_json(secret, machine),
        }

    def _policy(self, actor, options):
        machine = self._machine(options["client_id"])
        changes = {}
        for option, field in (
            ("max_secret_age", "max_secret_age"),
            ("warning_period", "secret_warning_period"),
            ("rotation_grace", "rotation_grace"),
            ("stale_action", "stale_action"),
        ):
            value = options[option]
            if value is None:
                continue  # not given: unchanged
            if value == "" and field != "stale_action":
                value = None  # empty: the default of the settings
            changes[field] = value
        machine = machine_update(actor=actor, machine=machine, **changes)
        return _machine_json(machine)

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
