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
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator, validate_email
from django.db import transaction
from django.utils import timezone

from audit.choices import EventType
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from clients.auth_methods import auth_methods_check, auth_methods_with_secret
from clients.constants import DEFAULT_AUTH_METHODS, MAX_SECRET_AGE, MAX_USABLE_SECRETS
from clients.credentials import secret_generate
from clients.machine_cache import machine_cache_invalidate
from clients.models import Audience, ClientSecret, Machine, Scope, scope_token_validator
from clients.selectors import secret_expiry, secret_list_usable

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
    if value is not None and (not isinstance(value, int) or not 60 <= value <= MAX_SECRET_AGE):
        raise ValidationError(
            {"max_secret_age": f"Maximum secret age must be 60 to {MAX_SECRET_AGE} seconds."}
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


def _uses_secret(machine: Machine) -> bool:
    return bool(auth_methods_with_secret() & set(machine.auth_methods))


def _secret_allowed(machine: Machine) -> None:
    if not _uses_secret(machine):
        raise ValidationError(
            "The machine uses no secret method: allow client_secret_basic or "
            "client_secret_post first."
        )


def _secret_add(*, machine: Machine, actor: Actor, now: datetime) -> tuple[ClientSecret, str]:
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
    )
    return row, generated.raw


def _secret_created_record(
    *, machine: Machine, secret: ClientSecret, actor: Actor, context: RequestContext | None
) -> None:
    """The ``secret.created`` event: which secret, shown only by its display form."""
    audit_record(
        event_type=EventType.SECRET_CREATED,
        actor=actor,
        target=_target(machine),
        details={"secret_id": secret.pk, "display": _secret_display(secret)},
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
    auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS,
) -> dict[str, Any]:
    """Validate a machine's complete settings without writing; the console form shows the errors.

    Returns the model's field values (scopes and audiences as rows). Raises a
    ``ValidationError`` keyed by the argument names above.
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
        "auth_methods": check(_auth_methods, auth_methods),
    }
    if not errors:
        check(
            _check_defaults,
            allowed=allowed,
            defaults=defaults,
            audiences=audience_rows,
            default_audience=default,
        )
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
    auth_methods: Sequence[str] = DEFAULT_AUTH_METHODS,
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
        auth_methods=auth_methods,
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
    auth_methods: Sequence[str] = UNSET,
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
        "auth_methods": (auth_methods, _auth_methods),
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
            for key in ("name", "owner_team", "owner_email", "tags", "max_secret_age")
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
    *, actor: Actor, machine: Machine, context: RequestContext | None = None
) -> tuple[ClientSecret, str]:
    """Add a secret next to the current one (up to ``MAX_USABLE_SECRETS``); raw returned once."""
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("The machine is deleted.")
    _secret_allowed(machine)
    now = timezone.now()
    if len(secret_list_usable(machine=machine, now=now)) >= MAX_USABLE_SECRETS:
        raise ValidationError(
            f"The machine already has {MAX_USABLE_SECRETS} usable secrets: rotate or revoke one."
        )
    secret, raw = _secret_add(machine=machine, actor=actor, now=now)
    _secret_created_record(machine=machine, secret=secret, actor=actor, context=context)
    machine_cache_invalidate(client_id=machine.client_id)
    return secret, raw


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
    machine = _lock(machine)
    if machine.deleted_at is not None:
        raise ValidationError("The machine is deleted.")
    _secret_allowed(machine)
    grace = _grace(machine.rotation_grace if grace is None else grace, field="grace")
    now = timezone.now()
    previous = secret_list_usable(machine=machine, now=now)
    secret, raw = _secret_add(machine=machine, actor=actor, now=now)
    grace_end = now + timedelta(seconds=grace)
    expiring: dict[str, str] = {}
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
    return secret, raw


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
