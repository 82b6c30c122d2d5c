"""Reads: what a machine may ask for, JWKS, discovery, and verifying our own tokens."""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Count
from django.urls import reverse
from django.utils import timezone

from clients.auth_methods import auth_methods_supported, auth_signing_algorithms
from clients.models import Scope
from core import jose
from core.prepared import prepared_cursor
from tokens.choices import KeyAlgorithm, KeyState
from tokens.constants import ACCESS_TOKEN_TYP, OPENID_SCOPE, PUBLISHED_STATES
from tokens.grants import grant_types_supported
from tokens.keyring import keyring_current
from tokens.models import IssuedToken, SigningKey


@dataclass(frozen=True)
class MachineGrants:
    """The scopes and audiences a machine may ask for, and what it gets by default."""

    allowed_scopes: frozenset[str]
    default_scopes: tuple[str, ...]
    audiences: frozenset[str]
    default_audience: str | None


def _related_rows(machine, name: str):
    """A many-to-many relation's rows, straight from the prefetch cache when present.

    The clients cache hands over machines with their relations prefetched;
    going through ``machine.<relation>.all()`` would build a related manager
    and clone a QuerySet per relation on every token request.
    """
    prefetched = getattr(machine, "_prefetched_objects_cache", {})
    if name in prefetched:
        return prefetched[name]
    return getattr(machine, name).all()


def machine_grants(*, machine) -> MachineGrants:
    """Read from the machine's prefetched relations (the clients cache prefetches them)."""
    default_audience = machine.default_audience.uri if machine.default_audience_id else None
    audiences = {audience.uri for audience in _related_rows(machine, "allowed_audiences")}
    if default_audience:
        audiences.add(default_audience)
    return MachineGrants(
        allowed_scopes=frozenset(scope.name for scope in _related_rows(machine, "allowed_scopes")),
        default_scopes=tuple(
            sorted(scope.name for scope in _related_rows(machine, "default_scopes"))
        ),
        audiences=frozenset(audiences),
        default_audience=default_audience,
    )


def token_checksum(token: str) -> str:
    """SHA-256 of a token, hex: what we store instead of the token."""
    return hashlib.sha256(token.encode("ascii")).hexdigest()


# --- JWKS and discovery ------------------------------------------------------


def jwks_document() -> dict[str, Any]:
    """Every trusted published key (pending, active, retiring); never private material.

    From the keyring, not the table: each public key there is derived from its
    authenticated private half, so a row forged or edited in the database is
    never published (tokens.keyring).
    """
    return {"keys": [dict(jwk) for jwk in keyring_current().jwks]}


def _absolute(name: str) -> str:
    return settings.ISSUER + reverse(name)


def discovery_document() -> dict[str, Any]:
    """RFC 8414 / OpenID Connect Discovery metadata: exactly what we support."""
    scopes = sorted({OPENID_SCOPE, *Scope.objects.values_list("name", flat=True)})
    algorithms = [choice.value for choice in KeyAlgorithm]
    auth_methods = auth_methods_supported()
    signing_algorithms = auth_signing_algorithms()
    return {
        "issuer": settings.ISSUER,
        "token_endpoint": _absolute("oauth-token"),
        "jwks_uri": _absolute("jwks"),
        "introspection_endpoint": _absolute("oauth-introspect"),
        "revocation_endpoint": _absolute("oauth-revoke"),
        "grant_types_supported": grant_types_supported(),
        # REQUIRED by RFC 8414 yet meaningless without an authorization endpoint:
        # "none" (OAuth 2.0 Multiple Response Type Encoding Practices) claims nothing.
        "response_types_supported": ["none"],
        "token_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        # RFC 8414 section 2: present only when a method signs (private_key_jwt and kin).
        **(
            {
                f"{endpoint}_endpoint_auth_signing_alg_values_supported": signing_algorithms
                for endpoint in ("token", "introspection", "revocation")
            }
            if signing_algorithms
            else {}
        ),
        "scopes_supported": scopes,
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "claims_supported": [
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "jti",
            "client_id",
            "scope",
            "name",
            "owner_team",
            "owner_email",
        ],
    }


# --- verifying our own tokens ------------------------------------------------


@dataclass(frozen=True)
class VerifiedToken:
    claims: dict[str, Any]
    record: IssuedToken


# Tokens whose signature this process has verified, by their exact text, for the
# keyring that verified them (bounded: a resource server introspects the same
# token on each request it serves, up to the token's lifetime).
SIGNATURES_REMEMBERED_MAX = 4096
_signatures: dict[str, tuple[object, jose.ParsedJWS]] = {}
_signatures_ring: object = None
_signatures_lock = threading.Lock()


def _signature_verified(token: str) -> jose.ParsedJWS:
    """``token`` parsed, its signature verified by a key of the current ring.

    Raises ``jose.InvalidJWS``. An ES256 verification cost about a third of an
    introspection's CPU, and whether given bytes verify under given keys
    never changes, so a token verified once is remembered by its exact text
    while the keyring is the same object (any key change loads a new ring and
    forgets them all). Only the signature is remembered: everything that can
    change (expiry, revocation, the key's and the machine's state) is checked
    on every call, in ``token_verify``.
    """
    global _signatures_ring
    ring = keyring_current()
    remembered = _signatures.get(token)
    # Each entry names its ring: a thread still holding the previous ring never
    # serves, nor is served, what another ring verified.
    if remembered is not None and remembered[0] is ring:
        return remembered[1]
    parsed = jose.jws_parse(token)
    jose.jws_verify(parsed, ring.verifiers)
    with _signatures_lock:
        if _signatures_ring is not ring:  # a new ring: forget the old one's entries
            _signatures.clear()
            _signatures_ring = ring
        if len(_signatures) >= SIGNATURES_REMEMBERED_MAX:
            del _signatures[next(iter(_signatures))]  # the oldest
        _signatures[token] = (ring, parsed)
    return parsed


def token_verify(*, token: str, now: float | None = None) -> VerifiedToken | None:
    """The token's claims when it is an active access token of ours, else None.

    Signature and header come first (no database work for junk). Then one query
    checks what must hold on every process at once: the record exists and
    matches, is not revoked, its key is not revoked, its machine is enabled.
    """
    try:
        parsed = _signature_verified(token)
    except jose.InvalidJWS:
        return None
    # A copy: the remembered claims are shared by every later call for this token.
    claims = dict(parsed.claims)
    now = time.time() if now is None else now
    exp, iat = claims.get("exp"), claims.get("iat")
    if (
        parsed.header.get("typ") != ACCESS_TOKEN_TYP
        or claims.get("iss") != settings.ISSUER
        or not isinstance(exp, int)
        or not isinstance(iat, int)
        or exp <= now
        or not isinstance(claims.get("jti"), str)
    ):
        return None
    found = _record_with_states(claims["jti"])
    if found is None:
        return None
    record, key_state, machine_enabled, machine_deleted_at = found
    if (
        not hmac.compare_digest(record.checksum, token_checksum(token))
        or record.revoked_at is not None
        or key_state not in PUBLISHED_STATES
        or record.signing_key_id != parsed.header.get("kid")
        or not machine_enabled
        or machine_deleted_at is not None
    ):
        return None
    return VerifiedToken(claims=claims, record=record)


def _record_with_states(jti: str) -> tuple[IssuedToken, str, bool, Any] | None:
    """(record, its key's state, its machine's ``enabled`` and ``deleted_at``), by jti."""
    if connection.vendor != "postgresql":
        record = next(iter(IssuedToken.objects.raw(_record_with_states_sql(), [jti])), None)
        if record is None:
            return None
        return record, record.key_state, record.machine_enabled, record.machine_deleted_at
    with prepared_cursor() as cursor:
        cursor.execute(_record_with_states_sql(), [jti])
        row = cursor.fetchone()
    if row is None:
        return None
    # Every column of the record is text, a number or a timestamp, which psycopg
    # returns as the ORM would (no field converts them on the way from the database).
    fields = IssuedToken._meta.concrete_fields
    record = IssuedToken.from_db("default", [f.attname for f in fields], list(row[: len(fields)]))
    return record, *row[len(fields) :]


_record_sql: str | None = None


def _record_with_states_sql() -> str:
    """The token record with its key's state and its machine's, by jti: one joined row.

    Written out once per process rather than compiled from a ``select_related``
    queryset on every introspection: compiling that query (every column of the
    machine and of the key) cost more CPU than the rest of an introspection.
    ``record.machine`` stays a lazy relation for the callers that need it.
    """
    global _record_sql
    if _record_sql is None:
        quote = connection.ops.quote_name
        machine = IssuedToken._meta.get_field("machine").related_model
        key_kid = SigningKey._meta.get_field("kid").column
        columns = ", ".join(f"t.{quote(f.column)}" for f in IssuedToken._meta.concrete_fields)
        # Identifiers come from our own models; the jti is a parameter.
        _record_sql = (
            f"SELECT {columns}, k.{quote('state')} AS key_state, "  # noqa: S608
            f"m.{quote('enabled')} AS machine_enabled, "
            f"m.{quote('deleted_at')} AS machine_deleted_at "
            f"FROM {quote(IssuedToken._meta.db_table)} t "
            f"JOIN {quote(SigningKey._meta.db_table)} k "
            f"ON k.{quote(key_kid)} = t.{quote(IssuedToken._meta.get_field('signing_key').column)} "
            f"JOIN {quote(machine._meta.db_table)} m "
            f"ON m.{quote(machine._meta.pk.column)} = t.{quote('machine_id')} "
            f"WHERE t.{quote('jti')} = %s"
        )
    return _record_sql


def token_record_for(*, token: str) -> IssuedToken | None:
    """The record of a token signed by one of our keys, whatever its state (revocation)."""
    try:
        parsed = jose.jws_parse(token)
        jose.jws_verify(parsed, keyring_current().verifiers)
    except jose.InvalidJWS:
        return None
    jti = parsed.claims.get("jti")
    if not isinstance(jti, str):
        return None
    record = IssuedToken.objects.select_related("machine").filter(jti=jti).first()
    if record is None or not hmac.compare_digest(record.checksum, token_checksum(token)):
        return None
    return record


def signing_keys_list() -> list[dict[str, Any]]:
    """Every key's public metadata, for ``keys list`` (never private material).

    ``problem`` is why the keyring distrusts a published row (tokens.keyring), else None.
    """
    problems = {problem.kid: problem.reason for problem in keyring_current().problems}
    return [
        {
            "kid": key.kid,
            "algorithm": key.algorithm,
            "state": key.state,
            "kek_id": key.kek_id,
            "created_at": key.created_at.isoformat(),
            "activate_after": key.activate_after.isoformat() if key.activate_after else None,
            "activated_at": key.activated_at.isoformat() if key.activated_at else None,
            "retire_after": key.retire_after.isoformat() if key.retire_after else None,
            "retired_at": key.retired_at.isoformat() if key.retired_at else None,
            "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
            "problem": problems.get(key.kid),
        }
        for key in SigningKey.objects.order_by("created_at", "id")
    ]


def signing_key_active_exists() -> bool:
    """Readiness: without an active key the token endpoint cannot answer."""
    return SigningKey.objects.filter(state=KeyState.ACTIVE).exists()


def signing_keys_summary() -> dict[str, Any]:
    """Keys per state, the active keys (the dashboard shows their age) and distrusted rows."""
    counts = dict(SigningKey.objects.order_by().values_list("state").annotate(total=Count("id")))
    active = list(
        SigningKey.objects.filter(state=KeyState.ACTIVE)
        .order_by("algorithm")
        .only("kid", "algorithm", "activated_at", "created_at")
    )
    return {
        "states": [(state.label, counts.get(state.value, 0)) for state in KeyState],
        "active": active,
        "problems": len(keyring_current().problems),
    }


def machine_tokens_live_count(*, machine) -> int:
    """The machine's unexpired, unrevoked tokens (what "revoke its tokens" would revoke)."""
    return IssuedToken.objects.filter(
        machine_id=machine.pk, revoked_at__isnull=True, expires_at__gt=timezone.now()
    ).count()


@dataclass(frozen=True)
class SigningKeysHealth:
    """What ``/metrics`` says about the signing keys: rows by state, and what signs."""

    by_state: dict[str, int]  # every KeyState, 0 included
    active_since: dict[str, datetime]  # algorithm -> when its signing key became active
    distrusted: int  # published rows the keyring refuses (forged or edited in the database)


def signing_keys_health() -> SigningKeysHealth:
    """One grouped count over the (small) key table, and the process's keyring.

    ``active_since`` holds only the keys the keyring trusts and signs with: a row
    planted as active without the KEK counts in ``by_state`` but signs nothing.
    """
    counts = dict(SigningKey.objects.order_by().values_list("state").annotate(n=Count("id")))
    ring = keyring_current()
    signing = {signer.kid for signer in ring.signers.values()}
    active_since = {
        algorithm: activated_at or created_at
        for kid, algorithm, activated_at, created_at in SigningKey.objects.filter(
            state=KeyState.ACTIVE
        ).values_list("kid", "algorithm", "activated_at", "created_at")
        if kid in signing
    }
    return SigningKeysHealth(
        by_state={state: counts.get(state, 0) for state in KeyState.values},
        active_since=active_since,
        distrusted=sum(1 for problem in ring.problems if not problem.trusted),
    )
