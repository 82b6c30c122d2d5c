"""``manage.py webhook``: a team's webhook endpoints from scripts (JSON on stdout).

The signing secret appears exactly once, in the output of ``create`` or
``rotate-secret``. Every change is audited with actor kind ``cli``.
"""

from __future__ import annotations

import json

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from audit.context import Actor
from notifications.models import WebhookEndpoint
from notifications.selectors import webhook_endpoint_list
from notifications.services import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_secret_rotate,
    webhook_endpoint_test,
    webhook_endpoint_update,
)


def _json(endpoint: WebhookEndpoint) -> dict:
    return {
        "id": str(endpoint.uid),
        "team": endpoint.team,
        "url": endpoint.url,
        "enabled": endpoint.enabled,
        "secret": f"…{endpoint.secret_last_four}",
    }


class Command(BaseCommand):
    help = "Manage webhook endpoints of teams (JSON on stdout)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Add an endpoint; prints its signing secret.")
        create.add_argument("--team", required=True)
        create.add_argument("--url", required=True)
        create.add_argument("--description", default="")
        for name in ("rotate-secret", "test", "enable", "disable", "delete"):
            actions.add_parser(name).add_argument("id")
        actions.add_parser("list")

    def handle(self, *args, action: str, **options):
        actor = Actor.cli(f"webhook {action}")
        try:
            result = getattr(self, "_" + action.replace("-", "_"))(actor, options)
        except ValidationError as exc:
            messages = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
            raise CommandError(json.dumps(messages)) from exc
        self.stdout.write(json.dumps(result, indent=2, ensure_ascii=False))

    def _endpoint(self, uid: str) -> WebhookEndpoint:
        try:
            return WebhookEndpoint.objects.get(uid=uid)
        except (WebhookEndpoint.DoesNotExist, ValidationError):
            raise CommandError(f"No webhook endpoint {uid!r}.") from None

    def _create(self, actor, options):
        endpoint, secret = webhook_endpoint_create(
            actor=actor,
            team=options["team"],
            url=options["url"],
            description=options["description"],
        )
        return {**_json(endpoint), "signing_secret": secret}

    def _rotate_secret(self, actor, options):
        endpoint, secret = webhook_endpoint_secret_rotate(
            actor=actor, endpoint=self._endpoint(options["id"])
        )
        return {**_json(endpoint), "signing_secret": secret}

    def _test(self, actor, options):
        notification = webhook_endpoint_test(actor=actor, endpoint=self._endpoint(options["id"]))
        return {"notification": notification.pk, "queued": True}

    def _enable(self, actor, options):
        return _json(
            webhook_endpoint_update(
                actor=actor, endpoint=self._endpoint(options["id"]), enabled=True
            )
        )

    def _disable(self, actor, options):
        return _json(
            webhook_endpoint_update(
                actor=actor, endpoint=self._endpoint(options["id"]), enabled=False
            )
        )

    def _delete(self, actor, options):
        endpoint = self._endpoint(options["id"])
        webhook_endpoint_delete(actor=actor, endpoint=endpoint)
        return {"deleted": options["id"]}

    def _list(self, actor, options):
        return [_json(endpoint) for endpoint in webhook_endpoint_list()]
