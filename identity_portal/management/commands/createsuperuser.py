"""Django's ``createsuperuser``, audited: the account and its ``user.created`` event commit
together; the event names the operator and the account, never the password.
"""

from __future__ import annotations

from django.contrib.auth.management.commands import createsuperuser
from django.db import transaction

from audit.choices import EventType
from audit.context import RequestContext
from clients.management.commands._cli import cli_actor
from identity_portal.management.commands._accounts import users_saved
from identity_portal.services import console_user_record


class Command(createsuperuser.Command):
    help = "Create a console superuser; the creation is recorded in the audit trail."

    def handle(self, *args, **options):
        with (
            transaction.atomic(using=options["database"]),
            users_saved(self.UserModel) as saved,
        ):
            super().handle(*args, **options)
            for user, created in saved:
                if created:
                    console_user_record(
                        event_type=EventType.USER_CREATED,
                        user=user,
                        actor=cli_actor("createsuperuser"),
                        context=RequestContext(),
                        details={"superuser": user.is_superuser, "staff": user.is_staff},
                    )
