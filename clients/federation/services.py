"""Adding and removing federation trusts: one transaction each, audited, cache told after commit."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from audit.choices import EventType
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from clients.federation.binding import trust_binding_new
from clients.federation.conditions import ConditionError, condition_check
from clients.federation.selectors import machine_trusts_invalidate
from clients.federation.templates import TEMPLATES
from clients.models import FederationTrust, Machine
from core import remote_jwks

# More would make every federated request of the machine try them all.
MAX_TRUSTS_PER_MACHINE = 20
MAX_JWKS_LENGTH = 16 * 1024


def _printable(value: str, *, field: str, required: bool, limit: int = 255) -> str:
    value = (value or "").strip()
    if required and not value:
        raise ValidationError({field: "This field is required."})
    if len(value) > limit or not value.isprintable() or not value.isascii():
        raise ValidationError({field: f"At most {limit} printable ASCII characters."})
    return value


def _issuer(value: str, *, has_jwks: bool) -> str:
    issuer = _printable(value, field="issuer", required=True)
    if has_jwks:
        # Keys pasted in: nothing is fetched, the issuer is only compared with ``iss``.
        return issuer
    try:
        remote_jwks.url_check(issuer, allow_private=settings.FEDERATION_ALLOW_PRIVATE_ISSUERS)
    except ValueError as exc:
        raise ValidationError(
            {"issuer": "An https:// issuer URL (its keys are fetched through its discovery)."}
        ) from exc
    return issuer


def _jwks(value: str | dict | None) -> str:
    """A pasted JWKS, kept as canonical JSON of its public members only."""
    if value in (None, ""):
        return ""
    if isinstance(value, str):
        if len(value) > MAX_JWKS_LENGTH:
            raise ValidationError({"jwks": f"A JWKS of at most {MAX_JWKS_LENGTH} characters."})
        try:
            value = json.loads(value)
        except (ValueError, RecursionError) as exc:
            raise ValidationError({"jwks": "Not JSON."}) from exc
    try:
        keys = remote_jwks.public_jwks(value)
    except ValueError as exc:
        raise ValidationError({"jwks": f"Not a usable JWKS: {exc}."}) from exc
    return json.dumps({"keys": keys}, sort_keys=True, separators=(",", ":"))


def trust_input_check(
    *,
    issuer: str,
    audience: str,
    subject: str = "",
    condition: str = "",
    jwks: str | dict | None = None,
    template: str = "",
    description: str = "",
) -> dict[str, Any]:
    """Validate a trust's fields without writing; ``ValidationError`` keyed by field."""
    errors: dict[str, list[str]] = {}

    def check(call, *args, **kwargs):
        try:
            return call(*args, **kwargs)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(messages)
            return None

    def condition_field(source: str) -> str:
        try:
            return condition_check(source)
        except ConditionError as exc:
            raise ValidationError({"condition": str(exc)}) from exc

    def template_field(name: str) -> str:
        if name and name not in TEMPLATES:
            raise ValidationError({"template": f"One of: {', '.join(TEMPLATES)}."})
        return name

    checked_jwks = check(_jwks, jwks)
    values = {
        "issuer": check(_issuer, issuer, has_jwks=bool(checked_jwks)),
        "audience": check(_printable, audience, field="audience", required=True),
        "subject": check(_printable, subject, field="subject", required=False),
        "condition": check(condition_field, condition),
        "jwks": checked_jwks,
        "template": check(template_field, template or ""),
        "description": check(_printable, description, field="description", required=False),
    }
    if not errors and not values["subject"] and not values["condition"]:
        # Issuer and audience alone would admit every workload of the platform
        # (every GitHub repository in the world that asks for this audience).
        errors["subject"] = ["A trust needs a subject, a condition, or both."]
    if errors:
        raise ValidationError(errors)
    return values


def _summary(trust: FederationTrust) -> dict[str, Any]:
    return {
        "trust_id": str(trust.uid),
        "issuer": trust.issuer,
        "audience": trust.audience,
        "subject": trust.subject,
        "condition": trust.condition,
        "pasted_jwks": bool(trust.jwks),
        "template": trust.template,
    }


def _target(machine: Machine) -> Target:
    return Target(kind="machine", id=machine.client_id, display=machine.name or machine.client_id)


@transaction.atomic
def trust_add(
    *,
    actor: Actor,
    machine: Machine,
    issuer: str,
    audience: str,
    subject: str = "",
    condition: str = "",
    jwks: str | dict | None = None,
    template: str = "",
    description: str = "",
    context: RequestContext | None = None,
) -> FederationTrust:
    """Let tokens of ``issuer`` that pass the checks authenticate as ``machine``."""
    values = trust_input_check(
        issuer=issuer,
        audience=audience,
        subject=subject,
        condition=condition,
        jwks=jwks,
        template=template,
        description=description,
    )
    # Under the machine's row lock: concurrent adds cannot pass the limit together.
    machine = Machine.objects.select_for_update().get(pk=machine.pk)
    if machine.deleted_at is not None:
        raise ValidationError({"machine": "The machine is deleted."})
    existing = FederationTrust.objects.filter(machine=machine)
    if existing.count() >= MAX_TRUSTS_PER_MACHINE:
        raise ValidationError(
            {"machine": f"A machine has at most {MAX_TRUSTS_PER_MACHINE} trusts."}
        )
    fields = {name: values[name] for name in ("issuer", "audience", "subject", "condition")}
    if existing.filter(**fields, jwks=values["jwks"]).exists():
        raise ValidationError({"issuer": "The machine already has this trust."})
    uid = uuid.uuid4()
    pepper_id, binding = trust_binding_new(
        uid=str(uid), client_id=machine.client_id, jwks=values["jwks"], **fields
    )
    trust = FederationTrust.objects.create(
        uid=uid,
        machine=machine,
        **values,
        pepper_id=pepper_id,
        binding=binding,
        created_at=timezone.now(),
        created_by=actor.display[:255],
    )
    audit_record(
        event_type=EventType.TRUST_ADDED,
        actor=actor,
        target=_target(machine),
        details=_summary(trust),
        context=context,
    )
    machine_trusts_invalidate(client_id=machine.client_id)
    return trust


@transaction.atomic
def trust_remove(
    *, actor: Actor, trust: FederationTrust, context: RequestContext | None = None
) -> None:
    """Withdraw a trust; its tokens stop authenticating once the cache is told (at commit)."""
    trust = FederationTrust.objects.select_for_update().select_related("machine").get(pk=trust.pk)
    machine = trust.machine
    summary = _summary(trust)
    trust.delete()
    audit_record(
        event_type=EventType.TRUST_REMOVED,
        actor=actor,
        target=_target(machine),
        details=summary,
        context=context,
    )
    machine_trusts_invalidate(client_id=machine.client_id)
