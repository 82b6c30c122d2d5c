"""Django's ``changepassword``, audited: the new password and its event commit together.

The event (``user.password_changed``) names the account and the operator,
never the password.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.contrib.auth.management.commands import changepassword
from django.db import transaction

from audit.choices import EventType
from audit.context import RequestContext
from clients.management.commands._cli import cli_actor
from identity_portal.management.commands._accounts import users_saved
from identity_portal.services import console_user_record


class Command(changepassword.Command):
    help = "Change a console user's password; the change is recorded in the audit trail."

    def handle(self, *args, **options):
        with (
            transaction.atomic(using=options["database"]),
            users_saved(get_user_model()) as saved,
        ):
            message = super().handle(*args, **options)
            for user, _created in saved:
                console_user_record(
                    event_type=EventType.USER_PASSWORD_CHANGED,
                    user=user,
                    actor=cli_actor("changepassword"),
                    context=RequestContext(),
                    details={},
                )
        return message
