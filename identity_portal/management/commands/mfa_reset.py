"""``manage.py mfa_reset USERNAME``: remove a console user's second factor from the shell.

For the superuser who lost both their authenticator and their recovery codes
(nobody is left to press the console's reset button). Recorded as
``console.mfa_reset`` with the operator as actor; the user enrols again at
their next sign-in. Prints JSON; exits 2 for an unknown user, changing nothing.
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from audit.context import RequestContext
from clients.management.commands._cli import cli_actor
from identity_portal.mfa import mfa_reset


class Command(BaseCommand):
    help = "Remove a console user's authenticator, passkeys and recovery codes (audited)."

    def add_arguments(self, parser):
        parser.add_argument("username")

    def handle(self, *args, **options):
        user_model = get_user_model()
        user = user_model.objects.filter(**{user_model.USERNAME_FIELD: options["username"]}).first()
        if user is None:
            self.stderr.write(json.dumps({"error": "unknown user"}))
            raise SystemExit(2)
        removed = mfa_reset(user=user, actor=cli_actor("mfa_reset"), context=RequestContext())
        self.stdout.write(json.dumps({"username": user.get_username(), "devices_removed": removed}))
