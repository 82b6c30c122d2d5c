"""Client authentication at the token endpoint (RFC 6749 section 2.3.1).

Two steps, both called by the token view: ``client_credentials_from_request``
parses the credentials and refuses malformed input (``MalformedClientRequest``,
nothing recorded, nothing changed); ``client_authenticate`` decides whether
they belong to a usable machine.

The hot path costs one cache round trip (the machine, its secret digests and
the throttle state come back from one ``get_many``), one HMAC-SHA256 per
configured pepper in use (about 2 µs) and no SQL on a warm cache; the
``last_used_at`` columns are written at most once per secret per
``LAST_USED_WRITE_INTERVAL``. Every failure raises ``ClientAuthError`` of one
shape whatever the reason, so the view can answer all of them with the same
bytes; the real reason goes only to the audit trail.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote_plus

from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http.multipartparser import MultiPartParserError
from django.utils import timezone

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from clients.constants import (
    AUTHORIZATION_HEADER_MAX_LENGTH,
    CLIENT_ID_MAX_LENGTH,
    CLIENT_SECRET_MAX_LENGTH,
    LAST_USED_WRITE_INTERVAL,
    SECRET_PREFIX,
)
from clients.credentials import (
    UnknownDigestVersion,
    UnknownPepper,
    current_pepper_id,
    secret_digest,
)
from clients.machine_cache import (
    CachedSecret,
    MachineAuthEntry,
    cache_safely,
    machine_auth_entry_resolve,
    machine_cache_key,
)
from clients.models import ClientSecret, Machine
from clients.throttling import (
    throttle_failure_record,
    throttle_keys,
    throttle_retry_after,
    throttle_success_record,
)
from core import metrics

BASIC = "client_secret_basic"
POST = "client_secret_post"


@dataclass(frozen=True)
class ClientCredentials:
    client_id: str
    secret: str
    method: str  # BASIC or POST

    def __repr__(self) -> str:  # the secret never reaches a log or a traceback
        return f"ClientCredentials(client_id={self.client_id!r}, method={self.method!r})"


class MalformedClientRequest(Exception):
    """The credentials cannot even be read: an RFC 6749 5.2 error, nothing recorded."""

    def __init__(self, *, error: str, description: str, status: int, used_basic: bool):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.used_basic = used_basic


class ClientAuthError(Exception):
    """Authentication failed. ``reason`` is for the audit trail, never for the response."""

    def __init__(self, *, reason: str, used_basic: bool):
        # The message is the same for every reason, so printing the exception reveals nothing.
        super().__init__("client authentication failed")
        self.reason = reason
        self.used_basic = used_basic


class Throttled(Exception):
    """Too many failures from this source: answer 429 with ``Retry-After``."""

    def __init__(self, *, retry_after: int):
        super().__init__(retry_after)
        self.retry_after = retry_after


def _invalid_request(description: str, *, used_basic: bool) -> MalformedClientRequest:
    return MalformedClientRequest(
        error="invalid_request", description=description, status=400, used_basic=used_basic
    )


def _invalid_client(description: str, *, used_basic: bool) -> MalformedClientRequest:
    return MalformedClientRequest(
        error="invalid_client", description=description, status=401, used_basic=used_basic
    )


def _is_vschar(value: str) -> bool:
    # RFC 6749 Appendix A: VSCHAR = %x20-7E; refuses NUL, controls and non-ASCII.
    return value.isascii() and value.isprintable()


def _checked(client_id: str, secret: str, *, used_basic: bool) -> tuple[str, str]:
    if len(client_id) > CLIENT_ID_MAX_LENGTH or len(secret) > CLIENT_SECRET_MAX_LENGTH:
        raise _invalid_request("client credentials are too long", used_basic=used_basic)
    if not _is_vschar(client_id) or not _is_vschar(secret):
        raise _invalid_request("client credentials must be printable ASCII", used_basic=used_basic)
    if not client_id or not secret:
        raise _invalid_client("client authentication required", used_basic=used_basic)
    return client_id, secret


def _from_basic(header: str) -> tuple[str, str]:
    scheme, _, param = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("use HTTP Basic authentication", used_basic=True)
    try:
        decoded = base64.b64decode(param.strip().encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError) as exc:
        raise _invalid_request("malformed Basic credentials", used_basic=True) from exc
    raw_id, colon, raw_secret = decoded.partition(":")
    if not colon:
        raise _invalid_request("malformed Basic credentials", used_basic=True)
    try:
        # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except UnicodeError as exc:
        raise _invalid_request("malformed Basic credentials", used_basic=True) from exc
    return _checked(client_id, secret, used_basic=True)


def client_credentials_from_request(
    request, form: Mapping[str, list[str]] | None = None
) -> ClientCredentials:
    """Read the client's credentials from the Authorization header or the form body.

    ``form`` is the body the caller already parsed (parameter -> values), so
    the body is parsed once per request; without it, Django's ``request.POST``.
    """
    header = request.META.get("HTTP_AUTHORIZATION")
    used_basic = header is not None
    if header is not None and len(header) > AUTHORIZATION_HEADER_MAX_LENGTH:
        raise _invalid_request("Authorization header too large", used_basic=True)
    if request.META.get("QUERY_STRING") and (
        "client_secret" in request.GET or "client_id" in request.GET
    ):
        raise _invalid_request(
            "client credentials are not accepted in the URL", used_basic=used_basic
        )
    if form is None:
        try:
            posted = request.POST
        except (SuspiciousOperation, MultiPartParserError) as exc:
            # Too big, too many fields, a broken multipart body: refused, never a 500.
            raise _invalid_request("request body refused", used_basic=used_basic) from exc
        form = {name: posted.getlist(name) for name in ("client_id", "client_secret")}
    form_ids = form.get("client_id") or []
    form_secrets = form.get("client_secret") or []
    if len(form_ids) > 1 or len(form_secrets) > 1:
        raise _invalid_request("a parameter is repeated", used_basic=used_basic)
    if header is not None:
        if form_secrets:
            raise _invalid_request("use one client authentication method, not two", used_basic=True)
        client_id, secret = _from_basic(header)
        if form_ids and form_ids[0] != client_id:
            raise _invalid_request("client_id differs from the Basic credentials", used_basic=True)
        return ClientCredentials(client_id=client_id, secret=secret, method=BASIC)
    if not form_ids and not form_secrets:
        raise _invalid_client("client authentication required", used_basic=False)
    if not form_ids:
        raise _invalid_request("client_id is required", used_basic=False)
    client_id, secret = _checked(
        form_ids[0], form_secrets[0] if form_secrets else "", used_basic=False
    )
    return ClientCredentials(client_id=client_id, secret=secret, method=POST)


def _matching_secret(entry: MachineAuthEntry, secret: str) -> CachedSecret | None:
    """The cached secret this one matches. Its digest covers the machine's client_id,
    so a secret row moved to this machine from another matches nothing."""
    client_id = entry.machine.client_id
    digests: dict[tuple[str, int], str] = {}
    for candidate in entry.secrets:
        form = (candidate.pepper_id, candidate.digest_version)
        digest = digests.get(form)
        if digest is None:
            try:
                digest = secret_digest(
                    secret=secret,
                    client_id=client_id,
                    pepper_id=candidate.pepper_id,
                    version=candidate.digest_version,
                )
            except (UnknownPepper, UnknownDigestVersion):
                continue  # a retired pepper or an unknown format: verifies nothing
            digests[form] = digest
        if hmac.compare_digest(digest, candidate.digest):
            return candidate
    return None


def _ip_allowed(ip: str | None, entry: MachineAuthEntry) -> bool:
    if not entry.networks:
        return True
    if ip is None:
        return False
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return any(address in network for network in entry.networks)


def _failure_reason(
    entry: MachineAuthEntry | None, client_id: str, secret: str, ip: str | None, now: float
) -> tuple[str, CachedSecret | None]:
    if entry is None:
        # Same work as a known client, so timing says little about existence.
        secret_digest(secret=secret, client_id=client_id, pepper_id=current_pepper_id())
        return "unknown_client", None
    match = _matching_secret(entry, secret)
    if match is None:
        return "wrong_secret", None
    if match.revoked_at is not None:
        return "secret_revoked", match
    if match.expires_at is not None and match.expires_at <= now:
        return "secret_expired", match
    if not entry.machine.enabled:
        return "machine_disabled", match
    if not _ip_allowed(ip, entry):
        return "ip_not_allowed", match
    return "", match


def _audit_client_id(client_id: str) -> str:
    # A secret pasted into the client_id field must not land in the audit trail.
    return "[redacted]" if SECRET_PREFIX in client_id else client_id[:128]


def _deny(
    *,
    credentials: ClientCredentials,
    entry: MachineAuthEntry | None,
    reason: str,
    context: RequestContext,
    blocked_for: int,
) -> None:
    client_id = _audit_client_id(credentials.client_id)
    if entry is None:
        actor = Actor(kind=ActorKind.ANONYMOUS, id=client_id, display=client_id)
        target = Target(kind="machine", id=client_id, display=client_id)
    else:
        display = entry.machine.name or client_id
        actor = Actor(kind=ActorKind.MACHINE, id=client_id, display=display)
        target = Target(kind="machine", id=client_id, display=display)
    details = {"method": credentials.method}
    if blocked_for:
        details["throttled_for"] = blocked_for
    # Its own transaction: the denial is recorded even though nothing else happens.
    with transaction.atomic():
        audit_record(
            event_type=EventType.TOKEN_DENIED,
            actor=actor,
            target=target,
            outcome=Outcome.FAILURE,
            reason=reason,
            details=details,
            context=context,
        )


# Per process: secret id -> time before which this process does not even ask the cache,
# so the hot path makes its one cache round trip and no other.
_last_used_local: dict[int, float] = {}


def _last_used_touch(machine: Machine, secret_id: int, ip: str | None, now: float) -> None:
    """Write last_used_at at most once per secret per interval across all processes."""
    if _last_used_local.get(secret_id, 0.0) > now:
        return
    if len(_last_used_local) > 100_000:
        _last_used_local.clear()
    _last_used_local[secret_id] = now + LAST_USED_WRITE_INTERVAL
    # Whoever adds the shared key first writes. Without the cache the write is skipped:
    # better a stale last_used_at than a write per token request.
    if not cache_safely(cache.add, f"clients:used:{secret_id}", 1, LAST_USED_WRITE_INTERVAL):
        return
    used_at = timezone.now()
    Machine.objects.filter(pk=machine.pk).update(last_used_at=used_at, last_used_ip=ip)
    ClientSecret.objects.filter(pk=secret_id).update(last_used_at=used_at)


def client_authenticate(*, credentials: ClientCredentials, context: RequestContext) -> Machine:
    """The machine these credentials belong to, or ``Throttled`` / ``ClientAuthError``."""
    now = time.time()
    used_basic = credentials.method == BASIC
    keys = throttle_keys(client_id=credentials.client_id, ip=context.source_ip, now=now)
    machine_key = machine_cache_key(credentials.client_id)
    values = cache_safely(cache.get_many, [machine_key, *keys.blocks, keys.fail_pair], default={})
    retry_after = throttle_retry_after(values=values, keys=keys, now=now)
    if retry_after:
        metrics.throttled(kind="client_authentication")
        raise Throttled(retry_after=retry_after)
    entry = machine_auth_entry_resolve(credentials.client_id, values.get(machine_key))
    reason, match = _failure_reason(
        entry, credentials.client_id, credentials.secret, context.source_ip, now
    )
    if reason:
        blocked_for = cache_safely(throttle_failure_record, keys=keys, now=now, default=0)
        _deny(
            credentials=credentials,
            entry=entry,
            reason=reason,
            context=context,
            blocked_for=blocked_for,
        )
        raise ClientAuthError(reason=reason, used_basic=used_basic)
    cache_safely(throttle_success_record, values=values, keys=keys)
    _last_used_touch(entry.machine, match.id, context.source_ip, now)
    return entry.machine_with_relations()
