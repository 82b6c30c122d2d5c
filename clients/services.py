"""Writes to machines, their secrets and the scope and audience registries.

Each function is one transaction that writes its audit event inside it and,
when the token path could see the change, invalidates the authentication
cache after commit. Secret changes lock the machine row first, so concurrent
rotations of one machine serialise and leave at most ``MAX_USABLE_SECRETS``
usable secrets. Raw secrets are returned to the caller once and stored only
as digests.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import transaction
from django.utils import timezone

from audit.choices import ActorKind, EventType
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from clients.auth_methods import auth_methods_check, auth_methods_with_secret
from clients.choices import StaleAction
from clients.constants import (
    DEFAULT_AUTH_METHODS,
    MAX_CLIENT_KEYS,
    MAX_SECRET_AGE,
    MAX_SECRET_USES,
    MAX_USABLE_SECRETS,
)
from clients.credentials import (
    client_key_binding,
    current_pepper_id,
    jwks_uri_binding,
    secret_generate,
)
from clients.machine_cache import machine_cache_invalidate
from clients.models import (
    Audience,
    ClientKey,
    ClientSecret,
    Machine,
    Scope,
    scope_token_validator,
)
from clients.selectors import secret_expiry, secret_list_usable
from core import jose, remote_jwks

NO_AUDIENCE_MESSAGE = (
    "Give the machine at least one audience (a resource server it may address): every "
    "token is issued for one, so without any this machine could never get a token."
)

# Longest grace a rotation may give the previous secret.
MAX_ROTATION_GRACE = 30 * 24 * 3600


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


def _target(machine: Machine) -> Target:
    return Target(kind="machine", id=machine.client_id, display=machine.name or machine.client_id)


def _secret_display(secret: ClientSecret) -> str:
    return f"{secret.display_prefix}…{secret.last_four}"


def _machine_actor(machine: Machine) -> Actor:
    """The machine itself as the actor of a change it made (self-rotation)."""
    return Actor(kind=ActorKind.MACHINE, id=machine.client_id, display=machine.name[:255])


def _lock(machine: Machine) -> Machine:
    """Re-read the machine under a row lock (PostgreSQL); SQLite serialises writers anyway."""
    return Machine.objects.select_for_update().get(pk=machine.pk)


def _scopes(names: Iterable[str], *, field: str) -> list[Scope]:
    names = list(dict.fromkeys(names))
    found = {scope.name: scope for scope in Scope.objects.filter(name__in=names)}
    unknown = [name for name in names if name not in found]
    if unknown:
        raise ValidationError({field: f"Unknown scope(s): {', '.join(sorted(unknown))}."})
    return [found[name] for name in names]


def _audiences(uris: Iterable[str], *, field: str) -> list[Audience]:
    uris = list(dict.fromkeys(uris))
    found = {audience.uri: audience for audience in Audience.objects.filter(uri__in=uris)}
    unknown = [uri for uri in uris if uri not in found]
    if unknown:
        raise ValidationError({field: f"Unknown audience(s): {', '.join(sorted(unknown))}."})
    return [found[uri] for uri in uris]


def _ttl(value: int) -> int:
    if not isinstance(value, int) or not 1 <= value <= settings.ACCESS_TOKEN_MAX_TTL:
        raise ValidationError(
            {
                "access_token_ttl": "Access-token lifetime must be 1 to "
                f"{settings.ACCESS_TOKEN_MAX_TTL} seconds."
            }
        )
    return value


def _grace(value: int, *, field: str = "rotation_grace") -> int:
    if not isinstance(value, int) or not 0 <= value <= MAX_ROTATION_GRACE:
        raise ValidationError({field: f"Grace must be 0 to {MAX_ROTATION_GRACE} seconds."})
    return value


def _max_age(value: int | None) -> int | None:
    if value is None or value == 0:  # the default policy / no maximum
        return value
    if not isinstance(value, int) or not 60 <= value <= MAX_SECRET_AGE:
        raise ValidationError(
            {
                "max_secret_age": f"Maximum secret age must be 60 to {MAX_SECRET_AGE} seconds "
                "(0: none; empty: the default)."
            }
        )
    return value


def _warning_period(value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or not 0 <= value <= MAX_SECRET_AGE):
        raise ValidationError(
            {"secret_warning_period": f"The warning period is 0 to {MAX_SECRET_AGE} seconds."}
        )
    return value


def _stale_action(value: str) -> str:
    value = value or ""
    if value and value not in StaleAction.values:
        raise ValidationError(
            {"stale_action": f"One of: {', '.join(StaleAction.values)} (empty: the default)."}
        )
    return value


def _allowlist(cidrs: Iterable[str]) -> list[str]:
    normalised = []
    for cidr in cidrs:
        try:
            normalised.append(str(ipaddress.ip_network(str(cidr).strip(), strict=False)))
        except ValueError as exc:
            raise ValidationError({"ip_allowlist": f"Not an IP network: {cidr!r}."}) from exc
    return list(dict.fromkeys(normalised))


_CONTROL_MESSAGE = "Control characters are not allowed."


def _has_control(value: str, *, allowed: str = "") -> bool:
    # NUL breaks PostgreSQL text columns; escapes and line breaks forge lines in logs
    # and terminals that show these fields.
    return any((ord(char) < 32 or 127 <= ord(char) < 160) and char not in allowed for char in value)


def _text(value: str, *, field: str, multiline: bool = False) -> str:
    """A free-text field: stripped, without control characters (a description may
    keep line breaks and tabs)."""
    value = (value or "").strip()
    if _has_control(value, allowed="\r\n\t" if multiline else ""):
        raise ValidationError({field: _CONTROL_MESSAGE})
    return value


def _name(value: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > 255:
        raise ValidationError({"name": "A name of 1 to 255 characters is required."})
    return _text(value, field="name")


def _description(value: str) -> str:
    return _text(value, field="description", multiline=True)


def _owner_team(value: str) -> str:
    return _text(value, field="owner_team")


def _email(value: str) -> str:
    value = (value or "").strip()
    if value:
        try:
            validate_email(value)
        except ValidationError as exc:
            raise ValidationError({"owner_email": "Enter a valid email address."}) from exc
    return value


def _tags(values: Iterable[str]) -> list[str]:
    tags = [str(tag).strip() for tag in values if str(tag).strip()]
    if any(len(tag) > 64 for tag in tags):
        raise ValidationError({"tags": "A tag is at most 64 characters."})
    if any(_has_control(tag) for tag in tags):
        raise ValidationError({"tags": _CONTROL_MESSAGE})
    return list(dict.fromkeys(tags))


def _auth_methods(values: Iterable[str]) -> list[str]:
    """Registered method names, in registry order; at least one."""
    names = [str(value) for value in values]
    try:
        checked = auth_methods_check(names)
    except ValueError as exc:
        raise ValidationError({"auth_methods": str(exc)}) from exc
    if not checked:
        raise ValidationError({"auth_methods": "At least one authentication method is required."})
    return checked


def _jwks_uri(value: str) -> str:
    """Empty, or a URL ``core.remote_jwks`` would fetch (https, no user info)."""
    value = (value or "").strip()
    if value:
        try:
            remote_jwks.url_check(value, allow_private=settings.JWKS_URI_ALLOW_PRIVATE)
        except ValueError as exc:
            raise ValidationError({"jwks_uri": f"{exc}."}) from exc
    return value


def _jwks_uri_bind(machine: Machine) -> None:
    """Bind the machine's jwks_uri to it under the newest pepper (nothing when empty)."""
    if not machine.jwks_uri:
        machine.jwks_uri_binding = machine.jwks_uri_pepper_id = ""
        return
    pepper_id = current_pepper_id()
    machine.jwks_uri_pepper_id = pepper_id
    machine.jwks_uri_binding = jwks_uri_binding(
        client_id=machine.client_id, jwks_uri=machine.jwks_uri, pepper_id=pepper_id
    )


def _uses_secret(machine: Machine) -> bool:
    return bool(auth_methods_with_secret() & set(machine.auth_methods))


def _secret_allowed(machine: Machine) -> None:
    if not _uses_secret(machine):
        raise ValidationError(
            "The machine uses no secret method: allow client_secret_basic or "
            "client_secret_post first."
        )


def _secret_add(
    *,
    machine: Machine,
    actor: Actor,
    now: datetime,
    max_uses: int | None = None,
    not_before: datetime | None = None,
) -> tuple[ClientSecret, str]:
    generated = secret_generate(client_id=machine.client_id)
    row = ClientSecret.objects.create(
        machine=machine,
        digest=generated.digest,
        digest_version=generated.digest_version,
        pepper_id=generated.pepper_id,
        display_prefix=generated.display_prefix,
        last_four=generated.last_four,
        created_at=now,
        created_by=actor.display[:255],
        max_uses=max_uses,
        not_before=not_before,
    )
    return row, generated.raw


def _max_uses(value: int | None) -> int | None:
    if value is not None and (not isinstance(value, int) or not 1 <= value <= MAX_SECRET_USES):
        raise ValidationError({"max_uses": f"Uses are 1 to {MAX_SECRET_USES} (empty: no limit)."})
    return value


def _not_before(value: datetime | None, *, now: datetime) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime) or timezone.is_naive(value):
        raise ValidationError({"not_before": "A time with its time zone."})
    if value > now + timedelta(seconds=MAX_SECRET_AGE):
        raise ValidationError({"not_before": "Too far in the future."})
    return value


def _secret_created_record(
    *, machine: Machine, secret: ClientSecret, actor: Actor, context: RequestContext | None
) -> None:
    """The ``secret.created`` event: which secret, shown only by its display form."""
    details: dict[str, Any] = {"secret_id": secret.pk, "display": _secret_display(secret)}
    if secret.max_uses is not None:
        details["max_uses"] = secret.max_uses
    if secret.not_before is not None:
        details["not_before"] = secret.not_before.isoformat()
    audit_record(
        event_type=EventType.SECRET_CREATED,
        actor=actor,
        target=_target(machine),
        details=details,
        context=context,
    )


def _check_defaults(
    *, allowed: list[Scope], defaults: list[Scope], audiences: list[Audience], default_audience
) -> None:
    outside = [scope.name for scope in defaults if scope not in allowed]
    if outside:
        raise ValidationError(
            {"default_scopes": f"Not among the allowed scopes: {', '.join(sorted(outside))}."}
        )
    if default_audience is not None and default_audience not in audiences:
        raise ValidationError({"default_audience": "Not among the allowed audiences."})


# --- Scope and audience registries ------------------------------------------


def _invalidate_machines(machines: Iterable[Machine]) -> None:
    for client_id in {machine.client_id for machine in machines}:
        machine_cache_invalidate(client_id=client_id)


@transaction.atomic
def scope_create(
    *, actor: Actor, name: str, description: str = "", context: RequestContext | None = None
) -> Scope:
    scope_token_validator(name)
    if Scope.objects.filter(name=name).exists():
        raise ValidationError({"name": f"Scope {name!r} already exists."})
    scope = Scope.objects.create(name=name, description=description.strip())
    audit_record(
        event_type=EventType.SCOPE_CREATED,
        actor=actor,
        target=Target(kind="scope", id=str(scope.pk), display=scope.name),
        details={"description": scope.description},
        context=context,
    )
    return scope


@transaction.atomic
def scope_update(
    *, actor: Actor, scope: Scope, description: str, context: RequestContext | None = None
) -> Scope:
    """Only the description changes: a scope's name is what tokens and machines refer to."""
    scope = Scope.objects.select_for_update().get(pk=scope.pk)
    scope.description = description.strip()
    scope.save(update_fields=["description"])
    audit_record(
        event_type=EventType.SCOPE_UPDATED,
        actor=actor,
        target=Target(kind="scope", id=str(scope.pk), display=scope.name),
        details={"description": scope.description},
        context=context,
    )
    _invalidate_machines([*scope.machines.all(), *scope.default_for.all()])
    return scope


def audience_uri_check(uri: str) -> str:
    """RFC 8707: an absolute URI without a fragment; http(s) or urn."""
    uri = (uri or "").strip()
    invalid = ValidationError(
        {"uri": "An audience is an absolute http(s) or urn: URI, no fragment."}
    )
    if not uri or len(uri) > 255 or "#" in uri or not uri.isascii() or not uri.isprintable():
        raise invalid
    try:
        scheme = urlsplit(uri).scheme.lower()
    except ValueError:  # "Invalid IPv6 URL" for an unclosed bracket
        raise invalid from None
    if scheme in {"https", "http"}:
        try:
            URLValidator(schemes=["https", "http"])(uri)
        except ValidationError:
            raise invalid from None
    elif scheme != "urn" or " " in uri or len(uri) < 6:
        raise invalid
    return uri


@transaction.atomic
def audience_create(
    *,
    actor: Actor,
    uri: str,
    name: str = "",
    description: str = "",
    context: RequestContext | None = None,
) -> Audience:
    uri = audience_uri_check(uri)
    if Audience.objects.filter(uri=uri).exists():
        raise ValidationError({"uri": f"Audience {uri!r} already exists."})
    audience = Audience.objects.create(uri=uri, name=name.strip(), description=description.strip())
    audit_record(
        event_type=EventType.AUDIENCE_CREATED,
        actor=actor,
        target=Target(kind="audience", id=str(audience.pk), display=audience.uri),
        details={"name": audience.name},
        context=context,
    )
    return audience


@transaction.atomic
def audience_update(
    *,
    actor: Actor,
    audience: Audience,
    name: str,
    description: str,
    context: RequestContext | None = None,
) -> Audience:
    """The URI is what tokens carry in ``aud``; only its labels change."""
    audience = Audience.objects.select_for_update().get(pk=audience.pk)
    audience.name = name.strip()
    audience.description = description.strip()
    audience.save(update_fields=["name", "description"])
    audit_record(
        event_type=EventType.AUDIENCE_UPDATED,
        actor=actor,
        target=Target(kind="audience", id=str(audience.pk), display=audience.uri),
        details={"name": audience.name},
        context=context,
    )
    _invalidate_machines([*audience.machines.all(), *audience.default_for.all()])
    return audience


# --- Machines ------------------------------------------------------------------


def _machine_summary(machine: Machine) -> dict[str, Any]:
    return {
        "name": machine.name,
        "scopes": sorted(scope.name for scope in machine.allowed_scopes.all()),
        "default_scopes": sorted(scope.name for scope in machine.default_scopes.all()),
        "audiences": sorted(audience.uri for audience in machine.allowed_audiences.all()),
        "default_audience": machine.default_audience.uri if machine.default_audience else None,
        "access_token_ttl": machine.access_token_ttl,
        "ip_allowlist": list(machine.ip_allowlist),
        "auth_methods": list(machine.auth_methods),
        "jwks_uri": machine.jwks_uri,
    }


def machine_input_check(
    *,
    name: str,
    description: str = "",
    owner_team: str = "",
    owner_email: str = "",
    tags: Sequence[str] = (),
    scopes: Sequence[str] = (),
    default_scopes: Sequence[str] = (),
    audiences: Sequence[str] = (),
    default_audience: str | None = None,
    access_token_ttl: int = 600,
    max_secret_age: int | None = None,
    rotation_grace: int = 24 * 3600,
    ip_allowlist: Sequence[str] = (),
    registering: bool = False,
    secret_warning_period: int | None = None,
    stale_action: str = "",
    auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS,
    jwks_uri: str = "",
) -> dict[str, Any]:
    """Validate a machine's complete settings without writing; the console form shows the errors.

    Returns the model's field values (scopes and audiences as rows). Raises a
    ``ValidationError`` keyed by the argument names above. ``registering``: a
    new machine must be able to get a token, so it needs an audience.
    """
    errors: dict[str, list[str]] = {}

    def check(call, *args, **kwargs):
        # Every field is checked so a form can show all its errors at once.
        try:
            return call(*args, **kwargs)
        except ValidationError as exc:
            for field, messages in exc.message_dict.items():
                errors.setdefault(field, []).extend(messages)
            return None

    allowed = check(_scopes, scopes, field="scopes")
    defaults = check(_scopes, default_scopes, field="default_scopes")
    audience_rows = check(_audiences, audiences, field="audiences")
    default = None
    if default_audience:
        default = (check(_audiences, [default_audience], field="default_audience") or [None])[0]
    values = {
        "name": check(_name, name),
        "description": check(_description, description),
        "owner_team": check(_owner_team, owner_team),
        "owner_email": check(_email, owner_email),
        "tags": check(_tags, tags),
        "access_token_ttl": check(_ttl, access_token_ttl),
        "max_secret_age": check(_max_age, max_secret_age),
        "rotation_grace": check(_grace, rotation_grace),
        "ip_allowlist": check(_allowlist, ip_allowlist),
        "secret_warning_period": check(_warning_period, secret_warning_period),
        "stale_action": check(_stale_action, stale_action),
        "auth_methods": check(_auth_methods, auth_methods),
        "jwks_uri": check(_jwks_uri, jwks_uri),
    }
    if not errors:
        check(
            _check_defaults,
            allowed=allowed,
            defaults=defaults,
            audiences=audience_rows,
            default_audience=default,
        )
    if registering and not audiences:
        errors.setdefault("audiences", []).append(NO_AUDIENCE_MESSAGE)
    if errors:
        raise ValidationError(errors)
    return {
        **values,
        "default_audience": default,
        "allowed_scopes": allowed,
        "default_scopes": defaults,
        "allowed_audiences": audience_rows,
    }


@transaction.atomic
def machine_register(
    *,
    actor: Actor,
    name: str,
    description: str = "",
    owner_team: str = "",
    owner_email: str = "",
    tags: Sequence[str] = (),
    scopes: Sequence[str] = (),
    default_scopes: Sequence[str] = (),
    audiences: Sequence[str] = (),
    default_audience: str | None = None,
    access_token_ttl: int = 600,
    max_secret_age: int | None = None,
    rotation_grace: int = 24 * 3600,
    ip_allowlist: Sequence[str] = (),
    secret_warning_period: int | None = None,
    stale_action: str = "",
    auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS,
    jwks_uri: str = "",
    created_by=None,
    context: RequestContext | None = None,
) -> tuple[Machine, str | None]:
    """Register a machine and, when it may use a secret, its first secret (returned once).

    Scopes and audiences must already be in the registries: a typo must not
    silently create a new right. With a single audience it becomes the default.
    A machine allowed no secret method gets no secret (``None``): none exists
    that could leak.
    """
    if not default_audience and len(audiences) == 1:
        default_audience = audiences[0]
    checked = machine_input_check(
        name=name,
        description=description,
        owner_team=owner_team,
        owner_email=owner_email,
        tags=tags,
        scopes=scopes,
        default_scopes=default_scopes,
        audiences=audiences,
        default_audience=default_audience,
        access_token_ttl=access_token_ttl,
        max_secret_age=max_secret_age,
        rotation_grace=rotation_grace,
        ip_allowlist=ip_allowlist,
        registering=True,
        secret_warning_period=secret_warning_period,
        stale_action=stale_action,
        auth_methods=auth_methods,
        jwks_uri=jwks_uri,
    )
    allowed = checked.pop("allowed_scopes")
    defaults = checked.pop("default_scopes")
    audience_rows = checked.pop("allowed_audiences")
    machine = Machine(
        **checked,
        # Always a confidential client with the client credentials grant only; its
        # credentials are ClientSecret rows, never the toolkit's client_secret column.
        client_type=Machine.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Machine.GRANT_CLIENT_CREDENTIALS,
        client_secret="",
        hash_client_secret=False,
        created_by=created_by,
    )
    machine.save()
    if machine.jwks_uri:
        _jwks_uri_bind(machine)  # the client_id exists only once saved
        machine.save(update_fields=["jwks_uri_binding", "jwks_uri_pepper_id"])
    machine.allowed_scopes.set(allowed)
    machine.default_scopes.set(defaults)
    machine.allowed_audiences.set(audience_rows)
    secret, raw = None, None
    if _uses_secret(machine):
        secret, raw = _secret_add(machine=machine, actor=actor, now=timezone.now())
    details = _machine_summary(machine)
    if secret is not None:
        details["secret_id"] = secret.pk
    audit_record(
        event_type=EventType.MACHINE_REGISTERED,
        actor=actor,
        target=_target(machine),
        details=details,
        context=context,
    )
    if secret is not None:
        _secret_created_record(machine=machine, secret=secret, actor=actor, context=context)
    machine_cache_invalidate(client_id=machine.client_id)
    return machine, raw


@transaction.atomic
def machine_update(
    *,
    actor: Actor,
    machine: Machine,
    name: str = UNSET,
    description: str = UNSET,
    owner_team: str = UNSET,
    owner_email: str = UNSET,
    tags: Sequence[str] = UNSET,
    scopes: Sequence[str] = UNSET,
    default_scopes: Sequence[str] = UNSET,
    audiences: Sequence[str] = UNSET,
    default_audience: str | None = UNSET,
    access_token_ttl: int = UNSET,
    max_secret_age: int | None = UNSET,
    rotation_grace: int = UNSET,
    ip_allowlist: Sequence[str] = UNSET,
    secret_warning_period: int | None = UNSET,
    stale_action: str = UNSET,
    auth_methods: Sequence[str] = UNSET,
    jwks_uri: str = UNSET,
    context: RequestContext | None = None,
) -> Machine:
    """Change what is given; the audit event names the fields and their new values."""
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("A deleted machine cannot change.")
    before = _machine_summary(machine)
    changed: list[str] = []
    simple = {
        "name": (name, _name),
        "description": (description, _description),
        "owner_team": (owner_team, _owner_team),
        "owner_email": (owner_email, _email),
        "tags": (tags, _tags),
        "access_token_ttl": (access_token_ttl, _ttl),
        "max_secret_age": (max_secret_age, _max_age),
        "rotation_grace": (rotation_grace, _grace),
        "ip_allowlist": (ip_allowlist, _allowlist),
        "secret_warning_period": (secret_warning_period, _warning_period),
        "stale_action": (stale_action, _stale_action),
        "auth_methods": (auth_methods, _auth_methods),
        "jwks_uri": (jwks_uri, _jwks_uri),
    }
    for field, (value, clean) in simple.items():
        if value is UNSET:
            continue
        value = clean(value)
        if getattr(machine, field) != value:
            setattr(machine, field, value)
            changed.append(field)

    allowed = (
        list(machine.allowed_scopes.all()) if scopes is UNSET else _scopes(scopes, field="scopes")
    )
    defaults = (
        list(machine.default_scopes.all())
        if default_scopes is UNSET
        else _scopes(default_scopes, field="default_scopes")
    )
    audience_rows = (
        list(machine.allowed_audiences.all())
        if audiences is UNSET
        else _audiences(audiences, field="audiences")
    )
    if default_audience is UNSET:
        default = machine.default_audience
        if default is not None and default not in audience_rows:
            default = None  # its audience was taken away
    elif default_audience:
        default = _audiences([default_audience], field="default_audience")[0]
    else:
        default = None
    _check_defaults(
        allowed=allowed, defaults=defaults, audiences=audience_rows, default_audience=default
    )
    if machine.default_audience != default:
        machine.default_audience = default
        changed.append("default_audience")
    if "jwks_uri" in changed:
        if machine.jwks_uri and machine.keys.exists():
            raise ValidationError(
                {"jwks_uri": "The machine has registered keys: remove them to use a jwks_uri."}
            )
        _jwks_uri_bind(machine)
    machine.save()
    machine.allowed_scopes.set(allowed)
    machine.default_scopes.set(defaults)
    machine.allowed_audiences.set(audience_rows)
    after = _machine_summary(machine)
    for key in ("scopes", "default_scopes", "audiences"):
        if before[key] != after[key]:
            changed.append(key)
    if changed:
        details: dict[str, Any] = {"changed": sorted(set(changed))}
        details["after"] = {
            key: getattr(machine, key)
            for key in (
                "name",
                "owner_team",
                "owner_email",
                "tags",
                "max_secret_age",
                "rotation_grace",
                "secret_warning_period",
                "stale_action",
            )
            if key in changed
        }
        details["after"].update({key: after[key] for key in after if key in changed})
        audit_record(
            event_type=EventType.MACHINE_UPDATED,
            actor=actor,
            target=_target(machine),
            details=details,
            context=context,
        )
        machine_cache_invalidate(client_id=machine.client_id)
    return machine


@transaction.atomic
def machine_disable(
    *, actor: Actor, machine: Machine, context: RequestContext | None = None
) -> Machine:
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("The machine is deleted.")
    if not machine.enabled:
        # Told again: repeating a disable is how an operator retries after the cache
        # could not be told the first time.
        machine_cache_invalidate(client_id=machine.client_id)
        return machine
    machine.enabled = False
    machine.save(update_fields=["enabled", "updated"])
    audit_record(
        event_type=EventType.MACHINE_DISABLED, actor=actor, target=_target(machine), context=context
    )
    machine_cache_invalidate(client_id=machine.client_id)
    return machine


@transaction.atomic
def machine_enable(
    *, actor: Actor, machine: Machine, context: RequestContext | None = None
) -> Machine:
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("A deleted machine cannot be enabled again.")
    if machine.enabled:
        return machine
    machine.enabled = True
    machine.save(update_fields=["enabled", "updated"])
    audit_record(
        event_type=EventType.MACHINE_ENABLED, actor=actor, target=_target(machine), context=context
    )
    machine_cache_invalidate(client_id=machine.client_id)
    return machine


@transaction.atomic
def machine_delete(
    *, actor: Actor, machine: Machine, context: RequestContext | None = None
) -> Machine:
    """Disable the machine and revoke every secret; the row and its audit history stay."""
    machine = _lock(machine)
    if machine.deleted_at is not None:
        machine_cache_invalidate(client_id=machine.client_id)  # a retry tells the cache again
        return machine
    now = timezone.now()
    revoked = list(machine.secrets.filter(revoked_at__isnull=True).values_list("pk", flat=True))
    ClientSecret.objects.filter(pk__in=revoked).update(revoked_at=now)
    machine.enabled = False
    machine.deleted_at = now
    machine.save(update_fields=["enabled", "deleted_at", "updated"])
    audit_record(
        event_type=EventType.MACHINE_DELETED,
        actor=actor,
        target=_target(machine),
        details={"revoked_secret_ids": sorted(revoked)},
        context=context,
    )
    machine_cache_invalidate(client_id=machine.client_id)
    return machine


# --- Secrets -------------------------------------------------------------------


@transaction.atomic
def secret_create(
    *,
    actor: Actor,
    machine: Machine,
    max_uses: int | None = None,
    not_before: datetime | None = None,
    context: RequestContext | None = None,
) -> tuple[ClientSecret, str]:
    """Add a secret next to the current one (up to ``MAX_USABLE_SECRETS``); raw returned once.

    ``max_uses`` and ``not_before`` make it a bootstrap credential: it
    authenticates from ``not_before`` on, at most ``max_uses`` times (a
    machine's first act with it is usually to rotate itself a lasting secret).
    """
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("The machine is deleted.")
    _secret_allowed(machine)
    now = timezone.now()
    max_uses = _max_uses(max_uses)
    not_before = _not_before(not_before, now=now)
    if len(secret_list_usable(machine=machine, now=now)) >= MAX_USABLE_SECRETS:
        raise ValidationError(
            f"The machine already has {MAX_USABLE_SECRETS} usable secrets: rotate or revoke one."
        )
    secret, raw = _secret_add(
        machine=machine, actor=actor, now=now, max_uses=max_uses, not_before=not_before
    )
    _secret_created_record(machine=machine, secret=secret, actor=actor, context=context)
    machine_cache_invalidate(client_id=machine.client_id)
    return secret, raw


@dataclass(frozen=True)
class Rotation:
    """A rotation's outcome; ``raw`` is the new secret, returned this once."""

    secret: ClientSecret
    raw: str
    expires_at: datetime | None
    previous_expire_at: datetime | None

    def __repr__(self) -> str:  # never print the raw value by accident
        return f"Rotation(secret={self.secret.pk})"


def _rotate(
    *,
    actor: Actor,
    machine: Machine,
    grace: int | None,
    context: RequestContext | None,
    by_secret_id: int | None = None,
) -> Rotation:
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("The machine is deleted.")
    _secret_allowed(machine)
    grace = _grace(machine.rotation_grace if grace is None else grace, field="grace")
    now = timezone.now()
    previous = secret_list_usable(machine=machine, now=now)
    if by_secret_id is not None and previous and previous[0].pk != by_secret_id:
        # A secret already being replaced (in its grace) may not rotate: whoever leaked
        # it could otherwise take a fresh secret and cut the owner's newest one short.
        raise ValidationError(
            "Rotate with the machine's newest secret; this one is being replaced."
        )
    secret, raw = _secret_add(machine=machine, actor=actor, now=now)
    grace_end = now + timedelta(seconds=grace)
    expiring: dict[str, str] = {}
    latest_end: datetime | None = None
    for index, old in enumerate(previous):
        if index < MAX_USABLE_SECRETS - 1:
            current = secret_expiry(secret=old, machine=machine)
            end = grace_end if current is None else min(grace_end, current)
        else:
            end = now  # beyond the limit: stops working at once
        if old.expires_at != end:
            old.expires_at = end
            old.save(update_fields=["expires_at"])
        expiring[str(old.pk)] = end.isoformat()
        latest_end = end if latest_end is None else max(latest_end, end)
    audit_record(
        event_type=EventType.SECRET_ROTATED,
        actor=actor,
        target=_target(machine),
        details={
            "secret_id": secret.pk,
            "display": _secret_display(secret),
            "grace_seconds": grace,
            "previous_expire_at": expiring,
        },
        context=context,
    )
    machine_cache_invalidate(client_id=machine.client_id)
    return Rotation(
        secret=secret,
        raw=raw,
        expires_at=secret_expiry(secret=secret, machine=machine),
        previous_expire_at=latest_end,
    )


@transaction.atomic
def secret_rotate(
    *,
    actor: Actor,
    machine: Machine,
    grace: int | None = None,
    context: RequestContext | None = None,
) -> tuple[ClientSecret, str]:
    """A new secret, usable at once; the previous one works for ``grace`` seconds more.

    ``grace`` defaults to the machine's rotation policy. Older usable secrets
    beyond ``MAX_USABLE_SECRETS`` expire now, so two rotations in a row never
    leave three secrets working.
    """
    rotation = _rotate(actor=actor, machine=machine, grace=grace, context=context)
    return rotation.secret, rotation.raw


@transaction.atomic
def secret_self_rotate(
    *, machine: Machine, secret_id: int | None, context: RequestContext | None = None
) -> Rotation:
    """The machine, authenticated with its newest secret, rotates its own secret.

    Its previous secret keeps working for the machine's rotation grace, so
    every instance of a fleet can pick the new one up before the old one stops.
    ``secret_id`` is the secret the request authenticated with: only the newest
    usable one may rotate (an old one in its grace is refused).
    """
    actor = _machine_actor(machine)
    return _rotate(
        actor=actor, machine=machine, grace=None, context=context, by_secret_id=secret_id
    )


@transaction.atomic
def secret_revoke(
    *, actor: Actor, secret: ClientSecret, context: RequestContext | None = None
) -> ClientSecret:
    """Revoke now (no grace): the answer to a leaked secret."""
    machine = _lock(secret.machine)
    secret = ClientSecret.objects.get(pk=secret.pk, machine=machine)
    if secret.revoked_at is not None:
        machine_cache_invalidate(client_id=machine.client_id)  # a retry tells the cache again
        return secret
    secret.revoked_at = timezone.now()
    secret.save(update_fields=["revoked_at"])
    audit_record(
        event_type=EventType.SECRET_REVOKED,
        actor=actor,
        target=_target(machine),
        details={"secret_id": secret.pk, "display": _secret_display(secret)},
        context=context,
    )
    machine_cache_invalidate(client_id=machine.client_id)
    return secret


# --- private_key_jwt keys ----------------------------------------------------------

# A JWK larger than this is no public key of an allowed type (an RSA-4096 JWK is ~800 bytes).
MAX_JWK_BYTES = 8192
_JWK_KEPT_MEMBERS = ("kid", "alg", "use")


def _client_key_jwk(jwk: Any) -> tuple[dict[str, Any], str]:
    """The public JWK to store (public members, kid, alg and use) and its RFC 7638 thumbprint.

    Refuses what is not a single public signing key of an allowed type: a
    private or symmetric JWK (``core.jose`` refuses ``d``, the RSA primes and
    ``k``, so a private key is never stored), another curve, an RSA key under
    2048 bits, an ``alg`` outside the allow-list or that the key does not fit.
    """
    invalid = "jwk"
    if not isinstance(jwk, dict):
        raise ValidationError({invalid: "A JWK is a JSON object (one key, not a key set)."})
    if len(json.dumps(jwk)) > MAX_JWK_BYTES:
        raise ValidationError({invalid: "The JWK is too large."})
    try:
        public_key = jose.public_key_from_jwk(jwk)
    except jose.InvalidJWK as exc:
        raise ValidationError({invalid: f"Not a usable public key: {exc}."}) from exc
    stored: dict[str, Any] = jose.public_jwk(public_key)
    thumbprint = jose.jwk_thumbprint(stored)
    kid = jwk.get("kid", thumbprint)
    if not isinstance(kid, str) or not 1 <= len(kid) <= 128 or not kid.isascii():
        raise ValidationError({invalid: "kid must be 1 to 128 ASCII characters."})
    if not kid.isprintable():
        raise ValidationError({invalid: "kid must be printable."})
    stored["kid"] = kid
    if "use" in jwk:
        if jwk["use"] != "sig":
            raise ValidationError({invalid: 'A signing key: "use" must be "sig".'})
        stored["use"] = "sig"
    if "alg" in jwk:
        alg = jwk["alg"]
        if alg not in jose.ALGORITHMS or not jose.key_fits(public_key, alg):
            raise ValidationError(
                {invalid: f"alg must be one of {', '.join(jose.ALGORITHMS)} and fit the key."}
            )
        stored["alg"] = alg
    if not any(jose.key_fits(public_key, alg) for alg in jose.ALGORITHMS):
        raise ValidationError({invalid: "The key fits none of the allowed algorithms."})
    return stored, thumbprint


def client_key_check(jwk: Any) -> tuple[dict[str, Any], str]:
    """What ``client_key_add`` would store for ``jwk`` and its thumbprint; writes nothing.

    Declarative apply checks a whole document with it before anything changes.
    """
    return _client_key_jwk(jwk)


def _client_key_summary(key: ClientKey) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "thumbprint": key.thumbprint,
        "kty": key.public_jwk.get("kty"),
        "alg": key.public_jwk.get("alg", ""),
    }


@transaction.atomic
def client_key_add(
    *,
    actor: Actor,
    machine: Machine,
    jwk: Any,
    context: RequestContext | None = None,
    reason: str = "",
) -> ClientKey:
    """Register a public key for ``private_key_jwt`` (at most ``MAX_CLIENT_KEYS``), bound to
    the machine under the newest pepper; audited as ``client_key.added``."""
    stored, thumbprint = _client_key_jwk(jwk)
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("The machine is deleted.")
    if machine.jwks_uri:
        raise ValidationError("The machine publishes its keys at its jwks_uri: clear it first.")
    existing = list(machine.keys.all())
    if len(existing) >= MAX_CLIENT_KEYS:
        raise ValidationError(f"The machine already has {MAX_CLIENT_KEYS} keys: remove one first.")
    if any(key.thumbprint == thumbprint or key.kid == stored["kid"] for key in existing):
        raise ValidationError("The machine already has this key (or this kid).")
    pepper_id = current_pepper_id()
    key = ClientKey.objects.create(
        machine=machine,
        kid=stored["kid"],
        thumbprint=thumbprint,
        public_jwk=stored,
        pepper_id=pepper_id,
        binding=client_key_binding(
            client_id=machine.client_id, public_jwk=stored, pepper_id=pepper_id
        ),
        created_at=timezone.now(),
        created_by=actor.display[:255],
    )
    audit_record(
        event_type=EventType.CLIENT_KEY_ADDED,
        actor=actor,
        target=_target(machine),
        reason=reason,
        details=_client_key_summary(key),
        context=context,
    )
    machine_cache_invalidate(client_id=machine.client_id)
    return key


@transaction.atomic
def client_key_remove(
    *,
    actor: Actor,
    machine: Machine,
    kid: str,
    context: RequestContext | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """Remove a registered key at once; audited as ``client_key.removed``.

    Raises ``ClientKey.DoesNotExist`` for a kid the machine does not have.
    """
    machine = _lock(machine)
    key = ClientKey.objects.get(machine=machine, kid=kid)
    summary = _client_key_summary(key)
    key.delete()
    audit_record(
        event_type=EventType.CLIENT_KEY_REMOVED,
        actor=actor,
        target=_target(machine),
        reason=reason,
        details=summary,
        context=context,
    )
    machine_cache_invalidate(client_id=machine.client_id)
    return summary


# The reason both events of a machine's own key replacement carry.
SELF_ROTATION = "self_rotation"


@dataclass(frozen=True)
class KeyReplacement:
    """A machine's own key replacement: the key now registered and the one it replaced."""

    key: ClientKey
    replaced: dict[str, Any]


@transaction.atomic
def client_key_self_replace(
    *, machine: Machine, signed_with: str, jwk: Any, context: RequestContext | None = None
) -> KeyReplacement:
    """The machine replaces the key ``signed_with`` (whose assertion authenticated it) by ``jwk``.

    At once, not after a grace: the caller holds the new private key when it
    asks, assertions are single-use and live minutes, and tokens already
    issued stay valid until they expire; keeping the old key for a while would
    need a third key slot, and would keep a key working that its owner just
    chose to stop trusting. Instances that share one key must switch
    together; instances that rotate on their own each get a key of their own
    (two slots). The key must still be registered (two instances replacing
    the same key: the second finds it gone and is refused), and the new key
    must be neither of the machine's keys nor reuse a kid. The removal and
    the addition go through ``client_key_remove`` and ``client_key_add`` (their
    checks, their audit events with the machine as actor and reason
    ``self_rotation``, their cache invalidation) in this one transaction.
    """
    actor = _machine_actor(machine)
    stored, thumbprint = _client_key_jwk(jwk)
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("The machine is deleted.")
    if "private_key_jwt" not in machine.auth_methods:
        raise ValidationError("The machine may not use private_key_jwt: it has no key to replace.")
    if machine.jwks_uri:
        raise ValidationError(
            "The machine publishes its keys at its jwks_uri: replace the key there."
        )
    existing = list(machine.keys.all())
    if not any(key.kid == signed_with for key in existing):
        raise ValidationError(
            "The key that signed this request is no longer registered (replaced meanwhile)."
        )
    if any(key.thumbprint == thumbprint or key.kid == stored["kid"] for key in existing):
        raise ValidationError("The machine already has this key (or this kid): send a new one.")
    replaced = client_key_remove(
        actor=actor, machine=machine, kid=signed_with, context=context, reason=SELF_ROTATION
    )
    key = client_key_add(
        actor=actor, machine=machine, jwk=jwk, context=context, reason=SELF_ROTATION
    )
    return KeyReplacement(key=key, replaced=replaced)
