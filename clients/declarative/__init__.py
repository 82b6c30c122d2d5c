"""Declarative apply: make the registry match a document of scopes, audiences and machines.

``registry_plan`` compares a document with the registry and says what would
change (nothing written); ``registry_apply`` makes those changes in one
transaction through the ordinary services, so every change writes its own
audit event and refuses what the console would refuse. Applying the same
document twice changes nothing the second time: each entry is compared field by
field, and a field the document leaves out is left as it is.

Machines are matched by name (a name used by two live machines is refused as
ambiguous); scopes by name, audiences by URI. Machines absent from the
document are left alone unless ``prune`` disables them. A machine's public
keys and federation trusts are listed as whole sets (``credentials``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from audit.context import Actor, RequestContext
from clients import services
from clients.declarative.credentials import credential_step_apply, credential_steps
from clients.declarative.steps import Plan, Step
from clients.models import Audience, Machine, Scope

__all__ = ["Applied", "Plan", "Step", "registry_apply", "registry_plan"]

# Fields of a machine entry compared as they are, and those compared as sets.
MACHINE_PLAIN_FIELDS = (
    "description",
    "owner_team",
    "owner_email",
    "access_token_ttl",
    "max_secret_age",
    "rotation_grace",
    "default_audience",
    "jwks_uri",
)
MACHINE_LIST_FIELDS = ("tags", "ip_allowlist")
MACHINE_SET_FIELDS = ("scopes", "default_scopes", "audiences", "auth_methods")


def _current_machine_values(machine: Machine) -> dict[str, Any]:
    return {
        "description": machine.description,
        "owner_team": machine.owner_team,
        "owner_email": machine.owner_email,
        "access_token_ttl": machine.access_token_ttl,
        "max_secret_age": machine.max_secret_age,
        "rotation_grace": machine.rotation_grace,
        "default_audience": machine.default_audience.uri if machine.default_audience else None,
        "jwks_uri": machine.jwks_uri,
        "tags": list(machine.tags),
        "ip_allowlist": list(machine.ip_allowlist),
        "scopes": sorted(scope.name for scope in machine.allowed_scopes.all()),
        "default_scopes": sorted(scope.name for scope in machine.default_scopes.all()),
        "audiences": sorted(audience.uri for audience in machine.allowed_audiences.all()),
        "auth_methods": sorted(machine.auth_methods),
    }


def _machine_differences(machine: Machine, entry: dict[str, Any]) -> list[str]:
    current = _current_machine_values(machine)
    changed = []
    for name in MACHINE_PLAIN_FIELDS:
        if name not in entry:
            continue
        wanted = entry[name]
        if name == "default_audience":
            wanted = wanted or None  # "" and null both mean none
        elif name == "jwks_uri":
            wanted = (wanted or "").strip()  # as the service stores it
        if wanted != current[name]:
            changed.append(name)
    for name in MACHINE_LIST_FIELDS:
        if name in entry and list(entry[name]) != current[name]:
            changed.append(name)
    for name in MACHINE_SET_FIELDS:
        if name in entry and sorted(set(entry[name])) != current[name]:
            changed.append(name)
    return changed


def _live_machines_by_name(names: set[str]) -> dict[str, Machine]:
    found: dict[str, Machine] = {}
    ambiguous = set()
    for machine in Machine.objects.filter(deleted_at__isnull=True, name__in=names).order_by("id"):
        if machine.name in found:
            ambiguous.add(machine.name)
        found[machine.name] = machine
    if ambiguous:
        raise ValidationError(
            {
                "machines": f"More than one machine is named {', '.join(sorted(ambiguous))}: "
                "rename one in the console before applying."
            }
        )
    return found


def registry_plan(*, document: dict[str, Any], prune: bool = False) -> Plan:
    """What applying ``document`` would change; reads only."""
    plan = Plan()
    scopes = {scope.name: scope for scope in Scope.objects.all()}
    for entry in document.get("scopes", []):
        existing = scopes.get(entry["name"])
        if existing is None:
            plan.steps.append(Step("create", "scope", entry["name"]))
        elif "description" in entry and entry["description"].strip() != existing.description:
            plan.steps.append(Step("change", "scope", entry["name"], ("description",)))
        else:
            plan.steps.append(Step("unchanged", "scope", entry["name"]))
    audiences = {audience.uri: audience for audience in Audience.objects.all()}
    for entry in document.get("audiences", []):
        existing = audiences.get(entry["uri"])
        if existing is None:
            plan.steps.append(Step("create", "audience", entry["uri"]))
            continue
        changed = tuple(
            name
            for name in ("name", "description")
            if name in entry and entry[name].strip() != getattr(existing, name)
        )
        plan.steps.append(
            Step("change" if changed else "unchanged", "audience", entry["uri"], changed)
        )
    entries = document.get("machines", [])
    names = [entry["name"] for entry in entries]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValidationError(
            {"machines": f"Named twice in the document: {', '.join(duplicated)}."}
        )
    machines = _live_machines_by_name(set(names))
    errors: list[str] = []
    for entry in entries:
        machine = machines.get(entry["name"])
        before, after = credential_steps(
            name=entry["name"], entry=entry, machine=machine, errors=errors
        )
        if machine is None:
            plan.steps.extend([Step("create", "machine", entry["name"]), *before, *after])
            continue
        steps = list(before)
        changed = tuple(_machine_differences(machine, entry))
        if changed:
            steps.append(Step("change", "machine", entry["name"], changed))
        steps.extend(after)
        wanted = entry.get("enabled")
        if wanted is not None and wanted != machine.enabled:
            steps.append(Step("enable" if wanted else "disable", "machine", entry["name"]))
        plan.steps.extend(steps or [Step("unchanged", "machine", entry["name"])])
    if errors:
        raise ValidationError({"machines": errors})
    if prune:
        for machine in Machine.objects.filter(deleted_at__isnull=True, enabled=True).exclude(
            name__in=names
        ):
            plan.steps.append(Step("disable", "machine", machine.name, ("pruned",)))
    return plan


@dataclass
class Applied:
    plan: Plan
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> id and raw secret

    def __repr__(self) -> str:  # the raw secrets never reach a log or a traceback
        return f"Applied(changes={self.plan.changes}, created={sorted(self.secrets)})"


def _machine_fields(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        name: entry[name]
        for name in (*MACHINE_PLAIN_FIELDS, *MACHINE_LIST_FIELDS, *MACHINE_SET_FIELDS)
        if name in entry
    }


@transaction.atomic
def registry_apply(
    *,
    document: dict[str, Any],
    actor: Actor,
    prune: bool = False,
    context: RequestContext | None = None,
    may_change: Callable[[Machine], None] | None = None,
) -> Applied:
    """Make the registry match ``document``: all of it or, on any refusal, none of it.

    ``may_change`` is called with every existing machine about to change (the
    management API uses it so a machine cannot change a more powerful one).
    New machines' secrets are returned once, in ``Applied.secrets``.
    """
    plan = registry_plan(document=document, prune=prune)
    applied = Applied(plan=plan)
    by_name = {entry["name"]: entry for entry in document.get("machines", [])}
    scope_entries = {entry["name"]: entry for entry in document.get("scopes", [])}
    audience_entries = {entry["uri"]: entry for entry in document.get("audiences", [])}
    for step in plan.steps:
        if step.action == "unchanged":
            continue
        if step.kind == "scope":
            entry = scope_entries[step.name]
            if step.action == "create":
                services.scope_create(
                    actor=actor,
                    name=step.name,
                    description=entry.get("description", ""),
                    context=context,
                )
            else:
                services.scope_update(
                    actor=actor,
                    scope=Scope.objects.get(name=step.name),
                    description=entry["description"],
                    context=context,
                )
        elif step.kind == "audience":
            entry = audience_entries[step.name]
            if step.action == "create":
                services.audience_create(
                    actor=actor,
                    uri=step.name,
                    name=entry.get("name", ""),
                    description=entry.get("description", ""),
                    context=context,
                )
            else:
                audience = Audience.objects.get(uri=step.name)
                services.audience_update(
                    actor=actor,
                    audience=audience,
                    name=entry.get("name", audience.name),
                    description=entry.get("description", audience.description),
                    context=context,
                )
        else:
            _machine_step(step, by_name.get(step.name), actor, context, may_change, applied)
    return applied


def _machine_step(step, entry, actor, context, may_change, applied: Applied) -> None:
    if step.kind in ("key", "trust"):
        machine = Machine.objects.get(deleted_at__isnull=True, name=step.name)
        if may_change is not None:
            may_change(machine)  # a key or trust is a way in: as for the keys endpoints
        credential_step_apply(step, machine=machine, actor=actor, context=context)
        return
    if step.action == "create":
        fields = _machine_fields(entry)
        machine, raw = services.machine_register(
            actor=actor, name=step.name, context=context, **fields
        )
        if entry.get("enabled") is False:
            services.machine_disable(actor=actor, machine=machine, context=context)
        if raw is not None:
            applied.secrets[step.name] = {"client_id": machine.client_id, "client_secret": raw}
        return
    machine = Machine.objects.get(deleted_at__isnull=True, name=step.name)
    if may_change is not None:
        may_change(machine)
    if step.action == "change":
        fields = {name: entry[name] for name in step.fields}
        services.machine_update(actor=actor, machine=machine, context=context, **fields)
    elif step.action == "disable":
        services.machine_disable(actor=actor, machine=machine, context=context)
    elif step.action == "enable":
        services.machine_enable(actor=actor, machine=machine, context=context)
