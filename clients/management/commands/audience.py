"""``manage.py audience create URI [--name NAME]``: add a resource server to the registry."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from clients.management.commands._cli import cli_actor, dump, refuse_invalid
from clients.selectors import audience_list
from clients.services import audience_create


class Command(BaseCommand):
    help = "Manage the audience (resource server) registry (JSON on stdout)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Add an audience machines may ask for.")
        create.add_argument("uri")
        create.add_argument("--name", default="")
        create.add_argument("--description", default="")
        actions.add_parser("list")

    def handle(self, *args, action: str, **options):
        if action == "list":
            result = [{"uri": a.uri, "name": a.name} for a in audience_list()]
        else:
            try:
                audience = audience_create(
                    actor=cli_actor("audience create"),
                    uri=options["uri"],
                    name=options["name"],
                    description=options["description"],
                )
            except ValidationError as exc:
                raise refuse_invalid(exc) from exc
            result = {"uri": audience.uri, "name": audience.name}
        self.stdout.write(dump(result))
