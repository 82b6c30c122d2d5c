"""``manage.py scope create NAME --description TEXT``: add to the scope registry."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand

from clients.management.commands._cli import cli_actor, dump, refuse_invalid
from clients.selectors import scope_list
from clients.services import scope_create


class Command(BaseCommand):
    help = "Manage the scope registry (JSON on stdout)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Add a scope machines may be given.")
        create.add_argument("name")
        create.add_argument("--description", default="")
        actions.add_parser("list")

    def handle(self, *args, action: str, **options):
        if action == "list":
            result = [{"name": s.name, "description": s.description} for s in scope_list()]
        else:
            try:
                scope = scope_create(
                    actor=cli_actor("scope create"),
                    name=options["name"],
                    description=options["description"],
                )
            except ValidationError as exc:
                raise refuse_invalid(exc) from exc
            result = {"name": scope.name, "description": scope.description}
        self.stdout.write(dump(result))
