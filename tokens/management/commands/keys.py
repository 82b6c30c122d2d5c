"""``manage.py keys``: rotate, list, revoke and rewrap signing keys.

When a change is saved but the cache could not be told (other processes may keep
the previous keys), the JSON is printed, stderr says so and the exit status is 3,
as for ``manage.py machine``."""

import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.context import Actor
from clients.cache_outcome import cache_failures_collected
from clients.management.commands._cli import cache_not_told
from tokens.choices import KeyAlgorithm
from tokens.models import SigningKey
from tokens.selectors import signing_keys_list
from tokens.services import signing_key_create, signing_key_revoke, signing_keys_rewrap

# An RFC 7638 thumbprint: SHA-256 in unpadded base64url.
KID_LENGTH = 43


class Command(BaseCommand):
    help = "Manage token signing keys."

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        rotate = sub.add_parser("rotate", help="Create a key; it signs after the publish delay.")
        rotate.add_argument(
            "--alg",
            choices=KeyAlgorithm.values,
            default=None,
            help="Default: TOKEN_SIGNING_ALGORITHM, the algorithm tokens are signed with.",
        )
        rotate.add_argument("--now", action="store_true", help="Activate at once.")
        sub.add_parser("list", help="Every key's public metadata, as JSON.")
        revoke = sub.add_parser("revoke", help="Withdraw a key at once (emergency).")
        revoke.add_argument("kid")
        sub.add_parser("rewrap", help="Re-encrypt private keys under the newest KEK.")

    def create_parser(self, prog_name, subcommand, **kwargs):
        """A kid is a base64url thumbprint: one in 64 starts with ``-``, which argparse
        would take for an option. ``revoke`` reads the word after it as the kid."""
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parse_args = parser.parse_args

        def parse_kid_verbatim(args=None, namespace=None):
            args = list(args or ())
            if "revoke" in args:
                at = args.index("revoke") + 1
                if at < len(args) and args[at].startswith("-") and len(args[at]) == KID_LENGTH:
                    args.insert(at, "--")
            return parse_args(args, namespace)

        parser.parse_args = parse_kid_verbatim
        return parser

    def handle(self, *args, **options):
        with cache_failures_collected() as failures:
            self._handle(options)
        if failures:
            raise cache_not_told(failures)

    def _handle(self, options):
        actor = Actor.cli("manage.py keys")
        action = options["action"]
        if action == "rotate":
            # Read at run time, not at import: the setting may differ per environment.
            algorithm = options["alg"] or settings.TOKEN_SIGNING_ALGORITHM
            key = signing_key_create(algorithm=algorithm, activate_now=options["now"], actor=actor)
            self.stdout.write(
                json.dumps({"kid": key.kid, "algorithm": key.algorithm, "state": key.state})
            )
        elif action == "list":
            self.stdout.write(json.dumps(signing_keys_list(), indent=2))
        elif action == "revoke":
            try:
                key = signing_key_revoke(kid=options["kid"], actor=actor)
            except SigningKey.DoesNotExist as exc:
                raise CommandError(f"No key {options['kid']!r}.") from exc
            self.stdout.write(json.dumps({"kid": key.kid, "state": key.state}))
        elif action == "rewrap":
            # Rows that do not authenticate are left as they are (logged, and
            # named by `keys list`): re-encrypting them would launder a forgery.
            count = signing_keys_rewrap(actor=actor)
            self.stdout.write(json.dumps({"rewrapped": count}))
