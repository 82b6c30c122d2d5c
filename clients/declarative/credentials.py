"""A machine's secretless credentials in a declarative document: public keys and trusts.

``public_keys`` (public JWKs for ``private_key_jwt``) and ``trusts``
(federation trusts), when an entry has them, are the whole set the machine
has: what is missing is added, what is not listed is removed, and ``[]``
removes them all. An entry without them leaves the machine's keys and trusts
alone. A key is the same key when its RFC 7638 thumbprint is; a trust is the
same trust when its issuer, audience, subject and condition are. Neither has
an update, so a listed key whose stored form differs (another kid, alg or
use), a trust whose pasted JWKS, template or description differ, and a row
that fails its binding to the server (written in the database, not by the
portal) are removed and added again.

The whole document is checked before anything is written, with the
services' own checks and limits (``client_key_check``, ``trust_input_check``,
``MAX_CLIENT_KEYS``, ``MAX_TRUSTS_PER_MACHINE``), so a dry run refuses what
applying would. The writes go through ``client_key_add``/``client_key_remove``
and ``trust_add``/``trust_remove``, each with its own audit event. A
machine's key removals come before its field changes and its additions, so a
document can replace both keys at once or trade keys for a ``jwks_uri``.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from audit.context import Actor, RequestContext
from clients.constants import MAX_CLIENT_KEYS
from clients.declarative.steps import Step
from clients.federation.selectors import trust_is_authentic, trust_list
from clients.federation.services import (
    MAX_TRUSTS_PER_MACHINE,
    trust_add,
    trust_input_check,
    trust_remove,
)
from clients.federation.templates import TemplateError, trust_fields_from_template
from clients.machine_cache import client_key_is_authentic
from clients.models import ClientKey, FederationTrust, Machine
from clients.services import client_key_add, client_key_check, client_key_remove

# The values a trust template takes (``clients.federation.templates.trust_template``).
TEMPLATE_VALUES = (
    "repository",
    "project_path",
    "ref",
    "environment",
    "namespace",
    "service_account",
)
TRUST_IDENTITY = ("issuer", "audience", "subject", "condition")
# What a stored trust is compared on: its identity and the rest trust_add stores.
TRUST_STORED = (*TRUST_IDENTITY, "jwks", "template", "description")


def _messages(error: ValidationError) -> list[str]:
    if hasattr(error, "error_dict"):
        return [f"{field}: {' '.join(messages)}" for field, messages in error.message_dict.items()]
    return list(error.messages)


def _wanted_keys(name: str, jwks: list, errors: list[str]) -> dict[str, tuple[dict, Any]]:
    """Thumbprint -> (the JWK as it would be stored, the JWK as listed)."""
    wanted: dict[str, tuple[dict, Any]] = {}
    kids: set[str] = set()
    if len(jwks) > MAX_CLIENT_KEYS:
        errors.append(f"{name}: public_keys: a machine has at most {MAX_CLIENT_KEYS} keys.")
    for index, jwk in enumerate(jwks):
        try:
            stored, thumbprint = client_key_check(jwk)
        except ValidationError as exc:
            errors.extend(f"{name}: public_keys[{index}]: {m}" for m in _messages(exc))
            continue
        if thumbprint in wanted or stored["kid"] in kids:
            errors.append(f"{name}: public_keys[{index}]: the same key or kid is listed twice.")
            continue
        wanted[thumbprint] = (stored, jwk)
        kids.add(stored["kid"])
    return wanted


def _key_steps(
    name: str, entry: dict[str, Any], machine: Machine | None, errors: list[str]
) -> tuple[list[Step], list[Step]]:
    """(removals, additions) of public keys."""
    if "public_keys" not in entry and "jwks_uri" not in entry:
        return [], []
    existing = list(ClientKey.objects.filter(machine=machine)) if machine is not None else []
    jwks_uri = entry.get("jwks_uri", machine.jwks_uri if machine is not None else "")
    if "public_keys" not in entry:
        if "jwks_uri" in entry and (jwks_uri or "").strip() and existing:
            errors.append(
                f"{name}: jwks_uri: the machine has registered keys: list public_keys: [] "
                "to remove them."
            )
        return [], []
    wanted = _wanted_keys(name, entry["public_keys"], errors)
    if wanted and (jwks_uri or "").strip():
        errors.append(
            f"{name}: public_keys: the machine publishes its keys at a jwks_uri; "
            'list keys or a jwks_uri, not both (jwks_uri: "" clears it).'
        )
    kept = {
        key.thumbprint
        for key in existing
        if key.thumbprint in wanted
        and wanted[key.thumbprint][0] == key.public_jwk
        and client_key_is_authentic(key, client_id=machine.client_id)
    }
    removals = [
        Step(
            "remove",
            "key",
            name,
            detail={"kid": key.kid, "thumbprint": key.thumbprint},
            payload=key.kid,
        )
        for key in existing
        if key.thumbprint not in kept
    ]
    additions = [
        Step(
            "add",
            "key",
            name,
            detail={"kid": stored["kid"], "thumbprint": thumbprint},
            payload=listed,
        )
        for thumbprint, (stored, listed) in wanted.items()
        if thumbprint not in kept
    ]
    return removals, additions


def _trust_checked(where: str, listed: dict[str, Any], errors: list[str]) -> dict | None:
    """The trust's values as ``trust_add`` would store them; None (and errors) if refused."""
    template = listed.get("template") or ""
    values = {name: listed.get(name) for name in TEMPLATE_VALUES if listed.get(name) is not None}
    issuer, subject = listed.get("issuer"), listed.get("subject")
    condition = listed.get("condition")
    if template:
        try:
            issuer, subject, condition = trust_fields_from_template(
                template, issuer=issuer, subject=subject, condition=condition, **values
            )
        except TemplateError as exc:
            errors.append(f"{where}: template: {exc}")
            return None
    elif values:
        errors.append(f"{where}: {', '.join(sorted(values))}: only with a template.")
        return None
    try:
        return trust_input_check(
            issuer=issuer or "",
            audience=listed.get("audience") or "",
            subject=subject or "",
            condition=condition or "",
            jwks=listed.get("jwks"),
            template=template,
            description=listed.get("description") or "",
        )
    except ValidationError as exc:
        errors.extend(f"{where}: {message}" for message in _messages(exc))
        return None


def _trust_steps(
    name: str, entry: dict[str, Any], machine: Machine | None, errors: list[str]
) -> tuple[list[Step], list[Step]]:
    """(removals, additions) of federation trusts."""
    if "trusts" not in entry:
        return [], []
    listed = entry["trusts"]
    if len(listed) > MAX_TRUSTS_PER_MACHINE:
        errors.append(f"{name}: trusts: a machine has at most {MAX_TRUSTS_PER_MACHINE} trusts.")
    wanted: dict[tuple, dict[str, Any]] = {}
    for index, item in enumerate(listed):
        where = f"{name}: trusts[{index}]"
        checked = _trust_checked(where, item, errors)
        if checked is None:
            continue
        identity = tuple(checked[field] for field in TRUST_IDENTITY)
        if identity in wanted:
            errors.append(f"{where}: the same issuer, audience, subject and condition twice.")
            continue
        wanted[identity] = checked
    existing = list(trust_list(machine=machine)) if machine is not None else []
    kept_rows: set[int] = set()
    kept_identities: set[tuple] = set()
    for trust in existing:
        identity = tuple(getattr(trust, field) for field in TRUST_IDENTITY)
        checked = wanted.get(identity)
        if (
            checked is not None
            and identity not in kept_identities
            and all(getattr(trust, field) == checked[field] for field in TRUST_STORED)
            and trust_is_authentic(trust)
        ):
            kept_rows.add(trust.pk)
            kept_identities.add(identity)
    removals = [
        Step(
            "remove",
            "trust",
            name,
            detail={field: getattr(trust, field) for field in TRUST_IDENTITY},
            payload=trust.pk,
        )
        for trust in existing
        if trust.pk not in kept_rows
    ]
    additions = [
        Step("add", "trust", name, detail={f: checked[f] for f in TRUST_IDENTITY}, payload=checked)
        for identity, checked in wanted.items()
        if identity not in kept_identities
    ]
    return removals, additions


def credential_steps(
    *, name: str, entry: dict[str, Any], machine: Machine | None, errors: list[str]
) -> tuple[list[Step], list[Step]]:
    """Steps that make the machine's keys and trusts match ``entry``: (before, after).

    ``before`` (key removals) is applied before the machine's field changes,
    ``after`` (key additions, trust removals and additions) after them.
    Refusals are appended to ``errors``; the caller refuses the document.
    """
    key_removals, key_additions = _key_steps(name, entry, machine, errors)
    trust_removals, trust_additions = _trust_steps(name, entry, machine, errors)
    return key_removals, [*key_additions, *trust_removals, *trust_additions]


def credential_step_apply(
    step: Step, *, machine: Machine, actor: Actor, context: RequestContext | None
) -> None:
    """Write one key or trust step through its service (which audits it)."""
    if step.kind == "key" and step.action == "remove":
        try:
            client_key_remove(actor=actor, machine=machine, kid=step.payload, context=context)
        except ClientKey.DoesNotExist:
            raise ValidationError(
                {"machines": f"{step.name}: a key was removed meanwhile: apply again."}
            ) from None
    elif step.kind == "key":
        client_key_add(actor=actor, machine=machine, jwk=step.payload, context=context)
    elif step.action == "remove":
        trust = FederationTrust.objects.filter(pk=step.payload, machine=machine).first()
        if trust is None:
            raise ValidationError(
                {"machines": f"{step.name}: a trust was removed meanwhile: apply again."}
            )
        trust_remove(actor=actor, trust=trust, context=context)
    else:
        trust_add(actor=actor, machine=machine, context=context, **step.payload)
