"""Writes: issuing, revoking and introspecting tokens; the signing-key lifecycle.

Every write runs in one transaction with its audit event. Issuing a token is
the hot path (docs/design.md, "The hot path"): the token record and
its ``token.issued`` event are one SQL statement on PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, models, transaction
from django.utils import timezone

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.models import AuditEvent
from audit.services import audit_event_fields, audit_record
from core import jose
from core.errors import InvalidScope, InvalidTarget, TemporarilyUnavailable, UnauthorizedClient
from core.prepared import prepared_cursor
from notifications.choices import NotificationKind
from notifications.services import notification_record, notifications_kick
from tokens import key_material
from tokens.choices import KeyAlgorithm, KeyState
from tokens.constants import (
    ACCESS_TOKEN_TYP,
    ID_TOKEN_TYP,
    JTI_BYTES,
    OPENID_SCOPE,
)
from tokens.keyring import (
    KeyNotAuthentic,
    NoSigningKey,
    keyring_changed,
    keyring_current,
    signing_key_unwrap,
)
from tokens.models import IssuedToken, SigningKey
from tokens.selectors import (
    VerifiedToken,
    machine_grants,
    token_checksum,
    token_record_for,
    token_verify,
)

logger = logging.getLogger(__name__)

# Seconds of clock skew a verifier may allow: a retiring key stays published this much longer.
CLOCK_LEEWAY = 60


def machine_actor(machine) -> Actor:
    return Actor(kind=ActorKind.MACHINE, id=machine.client_id, display=machine.name[:255])


# --- issuing ------------------------------------------------------------------


@dataclass(frozen=True)
class IssuedTokens:
    """A successful token response (RFC 6749 section 5.1); the values exist only here."""

    access_token: str
    expires_in: int
    scope: str
    id_token: str | None

    def __repr__(self) -> str:  # never print a token by accident
        return f"IssuedTokens(scope={self.scope!r}, expires_in={self.expires_in})"


def _granted_scopes(*, requested: list[str] | None, grants) -> list[str]:
    if requested is None:
        return list(grants.default_scopes)
    refused = [scope for scope in requested if scope not in grants.allowed_scopes]
    if refused:
        raise InvalidScope("The machine may not request: " + " ".join(sorted(refused)))
    return sorted(set(requested))


def _granted_audience(*, resource: str | None, grants) -> str:
    if resource is None:
        if grants.default_audience is None:
            raise InvalidTarget("The machine has no default audience: pass a resource.")
        return grants.default_audience
    if resource not in grants.audiences:
        raise InvalidTarget("The machine may not address this resource.")
    return resource


def token_denied_record(
    *, machine, reason: str, details: dict[str, Any], context: RequestContext
) -> None:
    """Record a refused request of an authenticated machine (scope, target)."""
    with transaction.atomic():
        audit_record(
            event_type=EventType.TOKEN_DENIED,
            actor=machine_actor(machine),
            target=Target(kind="machine", id=machine.client_id, display=machine.name[:255]),
            outcome=Outcome.FAILURE,
            reason=reason,
            details=details,
            context=context,
        )


@dataclass(frozen=True)
class TokenDecision:
    """What a grant decided to issue (``tokens.grants``): to whom, which scopes, for which audience.

    ``details`` are what the grant or the client's credential add to the
    ``token.issued`` event (for example the external token a federated machine
    presented); the client credentials grant adds nothing.
    """

    machine: Any
    scopes: tuple[str, ...]
    audience: str
    grant_type: str
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def token_decide(
    *,
    machine,
    scopes: list[str] | None,
    resource: str | None,
    grant_type: str,
    context: RequestContext,
) -> TokenDecision:
    """The policy: scopes within the machine's allowed scopes, the resource within its audiences.

    ``scopes`` None means the machine's default scopes; ``resource`` None its
    default audience (RFC 8707). A refused scope or resource raises the RFC
    error after recording a ``token.denied`` event.
    """
    grants = machine_grants(machine=machine)
    try:
        granted = _granted_scopes(requested=scopes, grants=grants)
        audience = _granted_audience(resource=resource, grants=grants)
    except (InvalidScope, InvalidTarget) as exc:
        token_denied_record(
            machine=machine,
            reason=exc.error,
            details={"scopes": scopes or [], "audience": resource or ""},
            context=context,
        )
        raise
    return TokenDecision(
        machine=machine, scopes=tuple(granted), audience=audience, grant_type=grant_type
    )


@dataclass(frozen=True)
class TokenClaims:
    """The claims of one issuance: the access token's, and the ID token's for ``openid``."""

    access: dict[str, Any]
    id_token: dict[str, Any] | None


def token_claims(*, decision: TokenDecision, now: int, lifetime: int, jti: str) -> TokenClaims:
    """The RFC 9068 access token claims (and OpenID Connect ID token claims) of a decision."""
    machine = decision.machine
    subject = str(machine.subject)
    expires = now + lifetime
    access = {
        "iss": settings.ISSUER,
        "sub": subject,
        "aud": decision.audience,
        "client_id": machine.client_id,
        "scope": " ".join(decision.scopes),
        "iat": now,
        "exp": expires,
        "jti": jti,
    }
    id_token = None
    if OPENID_SCOPE in decision.scopes:
        id_token = {
            "iss": settings.ISSUER,
            "sub": subject,
            "aud": machine.client_id,
            "iat": now,
            "exp": expires,
            "name": machine.name,
            "owner_team": machine.owner_team,
            "owner_email": machine.owner_email,
        }
    return TokenClaims(access=access, id_token=id_token)


def token_issue(*, decision: TokenDecision, context: RequestContext) -> IssuedTokens:
    """Sign what a grant decided, record the token and its ``token.issued`` event.

    The one issuing path for every grant: signing with the in-memory active
    key, then the token record and audit event in one statement (one round
    trip on PostgreSQL, ``_insert_record_and_event``).
    """
    try:
        signer = keyring_current().signer(settings.TOKEN_SIGNING_ALGORITHM)
    except NoSigningKey as exc:
        logger.error("token endpoint: no active signing key; run `manage.py first_run`")
        raise TemporarilyUnavailable("No signing key is active.") from exc

    machine = decision.machine
    moment = time.time()
    now = int(moment)
    lifetime = min(machine.access_token_ttl, settings.ACCESS_TOKEN_MAX_TTL)
    jti = secrets.token_urlsafe(JTI_BYTES)
    claims = token_claims(decision=decision, now=now, lifetime=lifetime, jti=jti)
    access_token = signer.sign(typ=ACCESS_TOKEN_TYP, claims=claims.access)
    id_token = None
    if claims.id_token is not None:
        id_token = signer.sign(typ=ID_TOKEN_TYP, claims=claims.id_token)
    _token_record(
        decision=decision,
        access_token=access_token,
        jti=jti,
        issued=now,
        expires=now + lifetime,
        occurred=moment,
        signer=signer,
        openid=id_token is not None,
        context=context,
    )
    return IssuedTokens(
        access_token=access_token,
        expires_in=lifetime,
        scope=claims.access["scope"],
        id_token=id_token,
    )


def _token_record(
    *,
    decision: TokenDecision,
    access_token: str,
    jti: str,
    issued: int,
    expires: int,
    occurred: float,
    signer: jose.Signer,
    openid: bool,
    context: RequestContext,
) -> None:
    """Persistence and audit: the token record (never the token) and its event, both or neither.

    The event keeps the moment to the microsecond (``occurred``), not the token's
    whole-second ``iat``: truncated, it sorted before changes made earlier in the
    same second, and the log's newest-first order lied.
    """
    machine = decision.machine
    scopes = list(decision.scopes)
    scope = " ".join(scopes)
    issued_at = datetime.fromtimestamp(issued, tz=UTC)
    expires_at = datetime.fromtimestamp(expires, tz=UTC)
    record = {
        "jti": jti,
        "checksum": token_checksum(access_token),
        "machine_id": machine.pk,
        "scope": scope,
        "audience": decision.audience,
        "issued_at": issued_at,
        "expires_at": expires_at,
        "signing_key_id": signer.kid,
    }
    details = {
        "jti": jti,
        "scopes": scopes,
        "audience": decision.audience,
        "expires_at": expires_at.isoformat(),
        "kid": signer.kid,
        "alg": signer.algorithm,
        "openid": openid,
    }
    if decision.details:
        details.update(decision.details)
    event = audit_event_fields(
        event_type=EventType.TOKEN_ISSUED,
        actor=machine_actor(machine),
        target=Target(kind="token", id=jti, display=machine.name[:255]),
        details=details,
        context=context,
        occurred_at=datetime.fromtimestamp(occurred, tz=UTC),
    )
    _insert_record_and_event(record=record, event=event)


_combined_sql: str | None = None


def _insertable(model: type[models.Model]) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not f.primary_key]


# Field types whose Python value is already what the driver sends: preparing
# them through the ORM costs more CPU than the rest of the insert.
# Exact types only: a subclass may prepare its values differently.
_PASSTHROUGH_TYPES = frozenset(
    {
        models.CharField,
        models.TextField,
        models.IntegerField,
        models.BigIntegerField,
        models.PositiveIntegerField,
        models.DateTimeField,
    }
)
# Addresses go to PostgreSQL as text: every statement built from ``_values`` casts each
# value to its column type, and ``CAST(text AS inet)`` parses and normalises them as the
# ORM's path does (``ipaddress`` objects and the driver's inet dumper, about ten
# functions per token request). Every event written through ``_values`` (the token's
# and ``_insert_event``'s) has its address from ``audit.context.request_context``,
# which ``core.client_address`` already checked; an empty one is NULL, as the field makes it.
_preparers: dict[type[models.Model], list[tuple[str, models.Field, bool, bool, bool]]] = {}


def _values(model: type[models.Model], fields: dict[str, Any], db) -> list[Any]:
    """PostgreSQL values of a row of ``model`` from attribute values, in column order.

    No model instance: building one (field by field, with its init signals)
    costs more CPU than the insert. Absent fields take their defaults. ``db``
    is the connection wrapper the row is written through.
    """
    preparers = _preparers.get(model)
    if preparers is None:
        preparers = [
            (
                f.attname,
                f,
                type(f) in _PASSTHROUGH_TYPES,
                bool(f.choices),
                type(f) is models.GenericIPAddressField,
            )
            for f in _insertable(model)
        ]
        _preparers[model] = preparers
    values = []
    for attname, field, passthrough, has_choices, address in preparers:
        value = fields[attname] if attname in fields else field.get_default()
        if address:
            values.append(value or None)
            continue
        if has_choices and isinstance(value, Enum):
            # A TextChoices member as its plain value (the same text): psycopg finds no
            # dumper for the enum class itself and walks its MRO, raising and catching
            # KeyErrors, on every execute.
            value = value._value_  # the member's value, without the ``value`` property's call
        values.append(value if passthrough else field.get_db_prep_save(value, db))
    return values


def _combined_statement() -> str:
    """``WITH t AS (INSERT token) INSERT event SELECT ... FROM t``, built once per process.

    Columns come from the models, so a column added to either table later is
    written too. Each value is cast to its column type: in a SELECT list an
    untyped literal would otherwise become text.
    """
    global _combined_sql
    if _combined_sql is None:
        quote = connection.ops.quote_name

        def columns(model):
            return ", ".join(quote(f.column) for f in _insertable(model))

        def casts(model):
            return ", ".join(f"CAST(%s AS {f.db_type(connection)})" for f in _insertable(model))

        # Identifiers and types come from our own models; every value is a parameter.
        _combined_sql = (
            f"WITH t AS (INSERT INTO {quote(IssuedToken._meta.db_table)} "  # noqa: S608
            f"({columns(IssuedToken)}) VALUES ({casts(IssuedToken)}) RETURNING 1) "
            f"INSERT INTO {quote(AuditEvent._meta.db_table)} ({columns(AuditEvent)}) "
            f"SELECT {casts(AuditEvent)} FROM t"
        )
    return _combined_sql


def _insert_record_and_event(*, record: dict[str, Any], event: dict[str, Any]) -> None:
    """The token record and its audit event, both or neither, in one round trip if possible."""
    # The wrapper itself, looked up once: each use of the module-level proxy (or of
    # ``connections``) looks it up in the thread's connections again, through asgiref.
    db = connections[DEFAULT_DB_ALIAS]
    if db.vendor == "postgresql":
        with prepared_cursor(db=db) as cursor:
            cursor.execute(
                _combined_statement(),
                [*_values(IssuedToken, record, db), *_values(AuditEvent, event, db)],
            )
        return
    with transaction.atomic():
        IssuedToken(**record).save(force_insert=True)
        AuditEvent(**event).save(force_insert=True)


_event_sql: str | None = None


def _insert_event(event: dict[str, Any]) -> None:
    """One audit event in one statement (PostgreSQL: prepared once per connection)."""
    global _event_sql
    if connection.vendor != "postgresql":
        AuditEvent(**event).save(force_insert=True)
        return
    if _event_sql is None:
        quote = connection.ops.quote_name
        fields = _insertable(AuditEvent)
        # Identifiers and types come from our own model; every value is a parameter.
        _event_sql = (
            f"INSERT INTO {quote(AuditEvent._meta.db_table)} "  # noqa: S608
            f"({', '.join(quote(f.column) for f in fields)}) VALUES "
            f"({', '.join(f'CAST(%s AS {f.db_type(connection)})' for f in fields)})"
        )
    db = connections[DEFAULT_DB_ALIAS]
    with prepared_cursor(db=db) as cursor:
        cursor.execute(_event_sql, _values(AuditEvent, event, db))


# --- revocation and introspection -----------------------------------------------


def token_revoke(*, machine, token: str, context: RequestContext) -> bool:
    """Revoke one of the machine's own tokens (RFC 7009); another's is refused and left alone.

    Returns whether a token was revoked (an unknown, invalid or already revoked
    token answers 200 all the same, RFC 7009 section 2.2). A token issued to
    another client raises ``UnauthorizedClient`` (section 2.1: the request is
    refused and the client told) after its failure event is committed.
    """
    record = token_record_for(token=token)
    owned = record is not None and record.machine_id == machine.pk
    with transaction.atomic():
        revoked = False
        if owned:
            revoked = bool(
                IssuedToken.objects.filter(pk=record.pk, revoked_at__isnull=True).update(
                    revoked_at=timezone.now()
                )
            )
        audit_record(
            event_type=EventType.TOKEN_REVOKED,
            actor=machine_actor(machine),
            target=Target(kind="token", id=record.jti if owned else ""),
            outcome=Outcome.SUCCESS if owned else Outcome.FAILURE,
            reason="" if owned else ("unknown_token" if record is None else "not_own_token"),
            details={"jti": record.jti, "already_revoked": not revoked} if owned else {},
            context=context,
        )
    if record is not None and not owned:
        raise UnauthorizedClient("The token was not issued to this client.")
    return revoked


@transaction.atomic
def machine_tokens_revoke(*, actor: Actor, machine, context: RequestContext | None = None) -> int:
    """Revoke every unexpired token of a machine (a console button); returns how many.

    Introspection then answers ``active: false`` for each; resource servers that
    only check the JWT signature keep accepting them until they expire, which
    is why the machine is usually disabled too. One ``token.revoked`` event
    with the count, whatever it is (zero included: the request was made).
    """
    now = timezone.now()
    count = IssuedToken.objects.filter(
        machine_id=machine.pk, revoked_at__isnull=True, expires_at__gt=now
    ).update(revoked_at=now)
    audit_record(
        event_type=EventType.TOKEN_REVOKED,
        actor=actor,
        target=Target(kind="machine", id=machine.client_id, display=machine.name[:255]),
        details={"all_of_machine": True, "revoked": count},
        context=context,
    )
    return count


def token_introspect(*, machine, token: str, context: RequestContext) -> dict[str, Any]:
    """RFC 7662 answer for a caller allowed to introspect, with its audit event.

    A token is active for the caller only if one of its audiences is an audience
    the caller may itself address (RFC 7662 section 4, RFC 9068 section 4): a
    low-value resource server must not learn whether a token meant for another
    is live, nor read its claims. Such a probe answers ``active: false`` like an
    unknown token, and is recorded as a failure (the token's jti, never its content).
    """
    verified: VerifiedToken | None = token_verify(token=token)
    audience_allowed = True
    if verified is not None:
        audience = verified.claims.get("aud")
        # RFC 7519 4.1.3: a string or an array of strings; ours are strings.
        token_audiences = (
            {audience}
            if isinstance(audience, str)
            else {a for a in audience if isinstance(a, str)}
            if isinstance(audience, list)
            else set()
        )
        audience_allowed = not token_audiences.isdisjoint(machine_grants(machine=machine).audiences)
    active = verified is not None and audience_allowed
    # The answer changes nothing but the trail: its one event is one statement (its own
    # transaction), prepared like the token insert, rather than the ORM's three.
    _insert_event(
        audit_event_fields(
            event_type=EventType.TOKEN_INTROSPECTED,
            actor=machine_actor(machine),
            target=Target(kind="token", id=verified.claims["jti"] if verified else ""),
            outcome=Outcome.SUCCESS if audience_allowed else Outcome.FAILURE,
            reason="" if audience_allowed else "audience_not_allowed",
            details={"active": active},
            context=context,
        )
    )
    if not active:
        return {"active": False}
    return {"active": True, "token_type": "Bearer", **verified.claims}


def issued_tokens_purge(*, now: datetime | None = None, batch_size: int = 1000) -> int:
    """Delete records of expired tokens in batches; their audit events stay.

    Batches follow the id order with a keyset cursor, each in a transaction of
    its own; the run ends with one ``token.purged`` event carrying its count
    (also when it is 0: the trail shows that the purge ran).
    """
    now = now or timezone.now()
    purged = 0
    cursor = 0
    while True:
        ids = list(
            IssuedToken.objects.filter(expires_at__lt=now, id__gt=cursor)
            .order_by("id")
            .values_list("id", flat=True)[:batch_size]
        )
        if not ids:
            break
        cursor = ids[-1]
        with transaction.atomic():
            purged += IssuedToken.objects.filter(id__in=ids, expires_at__lt=now).delete()[0]
    with transaction.atomic():
        audit_record(
            event_type=EventType.TOKENS_PURGED,
            actor=Actor.system("token purge"),
            target=Target(kind="issued_tokens", id="", display="expired token records"),
            details={"purged": purged, "expired_before": now.isoformat()},
        )
    return purged


# --- signing keys ----------------------------------------------------------------------


def _key_target(key: SigningKey) -> Target:
    return Target(kind="signing_key", id=key.kid, display=key.algorithm)


def _newest_kek() -> tuple[str, bytes]:
    return next(iter(settings.SERVER_SECRETS.key_encryption_keys.items()))


def _key_retire_after(now: datetime) -> datetime:
    # Published until the last token it signed has expired, plus verifiers' clock skew.
    return now + timedelta(seconds=settings.ACCESS_TOKEN_MAX_TTL + CLOCK_LEEWAY)


def _key_activate(*, key: SigningKey, actor: Actor, now: datetime, context) -> None:
    """Make ``key`` the active key of its algorithm; the previous one starts retiring."""
    for previous in SigningKey.objects.select_for_update().filter(
        algorithm=key.algorithm, state=KeyState.ACTIVE
    ):
        previous.state = KeyState.RETIRING
        previous.retiring_at = now
        previous.retire_after = _key_retire_after(now)
        previous.save(update_fields=["state", "retiring_at", "retire_after"])
        audit_record(
            event_type=EventType.KEY_RETIRED,
            actor=actor,
            target=_key_target(previous),
            details={"state": KeyState.RETIRING, "retire_after": previous.retire_after.isoformat()},
            context=context,
        )
    key.state = KeyState.ACTIVE
    key.activated_at = now
    key.save(update_fields=["state", "activated_at"])
    audit_record(
        event_type=EventType.KEY_ACTIVATED,
        actor=actor,
        target=_key_target(key),
        details={"algorithm": key.algorithm},
        context=context,
    )
    notification_record(
        kind=NotificationKind.KEY_ROTATED,
        dedup_key=f"key.activated:{key.kid}",
        subject=_key_target(key),
        payload={"kid": key.kid, "algorithm": key.algorithm, "activated_at": now.isoformat()},
        now=now,
    )
    notifications_kick()
    keyring_changed()


def signing_key_create(
    *,
    algorithm: str = KeyAlgorithm.ES256,
    activate_now: bool = False,
    actor: Actor,
    context: RequestContext | None = None,
) -> SigningKey:
    """Generate a key, wrap its private half, publish it (pending or active at once)."""
    if algorithm not in KeyAlgorithm.values:
        raise ValueError(f"unsupported algorithm {algorithm!r}")
    private_key = key_material.private_key_generate(algorithm)
    public = jose.public_jwk(private_key.public_key())
    kid = jose.jwk_thumbprint(public)
    kek_id, kek = _newest_kek()
    now = timezone.now()
    with transaction.atomic():
        key = SigningKey.objects.create(
            kid=kid,
            algorithm=algorithm,
            state=KeyState.PENDING,
            public_jwk=public,
            private_key_wrapped=key_material.private_key_wrap(
                private_key, kek=kek, kid=kid, algorithm=algorithm
            ),
            kek_id=kek_id,
            created_at=now,
            activate_after=now + timedelta(seconds=settings.KEY_PUBLISH_DELAY),
        )
        audit_record(
            event_type=EventType.KEY_CREATED,
            actor=actor,
            target=_key_target(key),
            details={
                "algorithm": algorithm,
                "activate_after": key.activate_after.isoformat(),
                "kek_id": kek_id,
            },
            context=context,
        )
        keyring_changed()
        if activate_now:
            key.activate_after = now
            key.save(update_fields=["activate_after"])
            _key_activate(key=key, actor=actor, now=now, context=context)
    return key


def signing_key_rotate_due(*, now: datetime | None = None, actor: Actor | None = None):
    """Start a scheduled rotation: a pending key when the active one is old enough.

    When the active key of ``TOKEN_SIGNING_ALGORITHM`` was activated at least
    ``KEY_ROTATION_INTERVAL`` ago and no key of that algorithm is pending, a
    new key is published pending; ``signing_keys_advance`` activates it after
    ``KEY_PUBLISH_DELAY`` and retires the previous one once its last token has
    expired. The active key's row lock makes two runs at once create one key.
    Returns the new key, or None.
    """
    interval = settings.KEY_ROTATION_INTERVAL
    if not interval:
        return None
    now = now or timezone.now()
    algorithm = settings.TOKEN_SIGNING_ALGORITHM
    with transaction.atomic():
        active = (
            SigningKey.objects.select_for_update()
            .filter(state=KeyState.ACTIVE, algorithm=algorithm)
            .first()
        )
        if active is None or (active.activated_at or active.created_at) > now - timedelta(
            seconds=interval
        ):
            return None
        if SigningKey.objects.filter(state=KeyState.PENDING, algorithm=algorithm).exists():
            return None
        return signing_key_create(
            algorithm=algorithm, actor=actor or Actor.system("key rotation schedule")
        )


def signing_keys_advance(*, now: datetime | None = None, actor: Actor | None = None) -> None:
    """The rotation schedule: activate due pending keys, retire due retiring keys.

    Idempotent: run by beat every minute, safe to run twice at once (row locks).
    """
    now = now or timezone.now()
    actor = actor or Actor.system("key rotation")
    with transaction.atomic():
        due = (
            SigningKey.objects.select_for_update()
            .filter(state=KeyState.PENDING, activate_after__lte=now)
            .order_by("created_at")
        )
        newest_due: dict[str, SigningKey] = {}
        superseded: list[SigningKey] = []
        for key in due:
            if key.algorithm in newest_due:
                superseded.append(newest_due[key.algorithm])
            newest_due[key.algorithm] = key  # the newest pending key of each algorithm wins
        for key in newest_due.values():
            _key_activate(key=key, actor=actor, now=now, context=None)
        for key in superseded:
            # Never signed anything: it leaves JWKS at once.
            key.state = KeyState.RETIRED
            key.retired_at = now
            key.save(update_fields=["state", "retired_at"])
            audit_record(
                event_type=EventType.KEY_RETIRED,
                actor=actor,
                target=_key_target(key),
                details={"state": KeyState.RETIRED, "superseded": True},
            )
        for key in SigningKey.objects.select_for_update().filter(
            state=KeyState.RETIRING, retire_after__lte=now
        ):
            key.state = KeyState.RETIRED
            key.retired_at = now
            key.save(update_fields=["state", "retired_at"])
            audit_record(
                event_type=EventType.KEY_RETIRED,
                actor=actor,
                target=_key_target(key),
                details={"state": KeyState.RETIRED},
            )
            keyring_changed()


def signing_key_revoke(
    *, kid: str, actor: Actor, context: RequestContext | None = None
) -> SigningKey:
    """Emergency withdrawal: out of JWKS at once, its tokens inactive at introspection.

    Revoking the active key puts a fresh key of the same algorithm in its
    place at once, so tokens keep being issued.
    """
    with transaction.atomic():
        key = SigningKey.objects.select_for_update().get(kid=kid)
        if key.state == KeyState.REVOKED:
            return key
        was_active = key.state == KeyState.ACTIVE
        key.state = KeyState.REVOKED
        key.revoked_at = timezone.now()
        # Destroy the private half: setting the state back with an UPDATE then
        # revives nothing, since the ring trusts only rows that decrypt.
        key.private_key_wrapped = b""
        key.save(update_fields=["state", "revoked_at", "private_key_wrapped"])
        audit_record(
            event_type=EventType.KEY_REVOKED,
            actor=actor,
            target=_key_target(key),
            details={"was_active": was_active},
            context=context,
        )
        keyring_changed()
        if was_active:
            signing_key_create(
                algorithm=key.algorithm, activate_now=True, actor=actor, context=context
            )
    return key


def signing_keys_rewrap(*, actor: Actor, context: RequestContext | None = None) -> int:
    """Re-encrypt every authentic private key under the newest key-encryption key.

    A row that does not authenticate (forged, tampered, or under a KEK this
    server lacks) is left as it is and logged: re-encrypting it would make a
    forgery authentic. Revoked keys have no private half left to move.
    """
    kek_id, kek = _newest_kek()
    keks = settings.SERVER_SECRETS.key_encryption_keys
    rewrapped = 0
    with transaction.atomic():
        rows = (
            SigningKey.objects.select_for_update()
            .exclude(kek_id=kek_id)
            .exclude(state=KeyState.REVOKED)
            .order_by("created_at", "id")
        )
        for key in rows:
            try:
                private_key = signing_key_unwrap(key=key, keks=keks)
            except KeyNotAuthentic as exc:
                logger.warning("keys rewrap: key %r left as it is: %s", key.kid, exc.reason)
                continue
            previous = key.kek_id
            key.private_key_wrapped = key_material.private_key_wrap(
                private_key, kek=kek, kid=key.kid, algorithm=key.algorithm
            )
            key.kek_id = kek_id
            key.save(update_fields=["private_key_wrapped", "kek_id"])
            audit_record(
                event_type=EventType.KEY_REWRAPPED,
                actor=actor,
                target=_key_target(key),
                details={"from_kek_id": previous, "to_kek_id": kek_id},
                context=context,
            )
            rewrapped += 1
        if rewrapped:
            keyring_changed()
    return rewrapped


def signing_key_problem_record(*, kid: str, reason: str, trusted: bool) -> bool:
    """Record a ``key.rejected`` event for a distrusted key row, once per kid and reason.

    Called by the keyring on every load that finds the problem, in every
    process: the row lock serialises concurrent loaders on PostgreSQL, and the
    existing event makes every later call a no-op. Returns whether it recorded.
    """
    with transaction.atomic():
        list(SigningKey.objects.select_for_update().filter(kid=kid).values_list("pk", flat=True))
        if AuditEvent.objects.filter(
            event_type=EventType.KEY_REJECTED, target_id=kid[:128], reason=reason
        ).exists():
            return False
        audit_record(
            event_type=EventType.KEY_REJECTED,
            actor=Actor.system("keyring"),
            target=Target(kind="signing_key", id=kid[:128], display=""),
            outcome=Outcome.FAILURE,
            reason=reason,
            details={"kid": kid, "reason": reason, "still_trusted": trusted},
        )
    return True


def signing_key_first_ensure() -> SigningKey | None:
    """First-run: an active key of the configured algorithm, unless one exists.

    Idempotent: the one-active-key-per-algorithm constraint makes a concurrent
    second run fail its insert, which is then treated as "exists".
    """
    algorithm = settings.TOKEN_SIGNING_ALGORITHM
    if SigningKey.objects.filter(state=KeyState.ACTIVE, algorithm=algorithm).exists():
        return None
    try:
        return signing_key_create(
            algorithm=algorithm, activate_now=True, actor=Actor.system("first run")
        )
    except IntegrityError:
        return None
