"""Client authentication at the protocol endpoints, for every method of ``clients.auth_methods``.

Two steps, both called by the endpoints: ``client_credentials_from_request``
finds the one method whose credentials the request carries and lets it read
them, refusing malformed input (an ``InvalidRequest`` or ``InvalidClient`` of
``core.errors``, nothing recorded, nothing changed); ``client_authenticate``
decides whether they belong to a usable machine.

The hot path costs one cache round trip (the machine's entry, the throttle
state and what the method reads, ``AuthMethod.cache_keys``, come back from
one ``get_many``), the method's own check (one
HMAC-SHA256 per pepper for a secret) and no SQL on a warm cache. Every
failure, whatever the method and the reason, raises ``ClientAuthError``, one
``invalid_client`` of one shape, so the endpoints answer all of them with the
same bytes; the real reason goes only to the audit trail. The checks after
the credential are the same for every method: the machine must allow the
method, be enabled and be called from an allowed address.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.db import transaction
from django.http.multipartparser import MultiPartParserError

from audit.choices import ActorKind, EventType, Outcome
from audit.context import Actor, RequestContext, Target
from audit.services import audit_record
from clients.auth_methods import (
    CLIENT_AUTH_PARAMETERS,
    Credentials,
    Presented,
    Verification,
    auth_method,
    presented_method,
)
from clients.auth_methods.client_secret import ClientCredentials, client_id_check
from clients.constants import AUTHORIZATION_HEADER_MAX_LENGTH, SECRET_PREFIX, THROTTLE_WINDOW
from clients.lifecycle import auth_failures_notify
from clients.machine_cache import (
    MachineAuthEntry,
    cache_safely,
    machine_auth_entry_resolve,
    machine_cache_keys,
)
from clients.models import Machine
from clients.secret_uses import secret_use_count
from clients.throttling import (
    throttle_failure_record,
    throttle_keys,
    throttle_retry_after,
    throttle_success_record,
)
from core import metrics
from core.errors import InvalidClient, InvalidRequest, SlowDown

__all__ = [
    "AuthenticatedClient",
    "ClientAuthError",
    "ClientCredentials",
    "Credentials",
    "client_authenticate",
    "client_credentials_from_request",
]


class ClientAuthError(InvalidClient):
    """Authentication failed. ``reason`` is for the audit trail, never for the response."""

    def __init__(self, *, reason: str) -> None:
        # The message is the same for every reason, so printing the exception reveals nothing.
        super().__init__()
        self.reason = reason


@dataclass(frozen=True)
class AuthenticatedClient:
    """Who authenticated, and how: ``details`` go into the ``token.issued`` event."""

    machine: Machine
    method: str
    details: Mapping[str, Any]
    # The secret that matched, when the method has one (self-rotation checks it).
    credential_id: int | None = None
    # The registered key whose signature verified (private_key_jwt): self-rotation replaces it.
    key_kid: str | None = None


def client_credentials_from_request(
    request,
    form: Mapping[str, list[str]] | None = None,
    *,
    assertion_audiences: frozenset[str] | None = None,
) -> Credentials:
    """Read the client's credentials with the one method whose credentials the request carries.

    ``form`` is the body the caller already parsed (parameter -> values), so
    the body is parsed once per request; without it, Django's ``request.POST``.
    ``assertion_audiences``: what a machine's own assertion must name in
    ``aud`` at this endpoint, when not the token endpoint's rule.
    """
    header = request.META.get("HTTP_AUTHORIZATION")
    if header is not None and len(header) > AUTHORIZATION_HEADER_MAX_LENGTH:
        raise InvalidRequest("Authorization header too large")
    if request.META.get("QUERY_STRING") and any(
        name in request.GET for name in CLIENT_AUTH_PARAMETERS - {"client_assertion_type"}
    ):
        raise InvalidRequest("client credentials are not accepted in the URL")
    if form is None:
        try:
            posted = request.POST
        except (SuspiciousOperation, MultiPartParserError) as exc:
            # Too big, too many fields, a broken multipart body: refused, never a 500.
            raise InvalidRequest("request body refused") from exc
        form = {name: posted.getlist(name) for name in CLIENT_AUTH_PARAMETERS}
    for name in CLIENT_AUTH_PARAMETERS:
        values = form.get(name)
        if values is not None and len(values) > 1:
            raise InvalidRequest("a parameter is repeated")
    presented = Presented(authorization=header, form=form, assertion_audiences=assertion_audiences)
    method = presented_method(presented)
    if method is None:
        client_id = presented.value("client_id")
        if client_id is not None:
            client_id_check(client_id)
        raise InvalidClient("client authentication required")
    return method.parse(presented)


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


def _machine_refusal(entry: MachineAuthEntry, ip: str | None) -> str:
    """What refuses a machine whose credential verified: the same for every method."""
    if not entry.machine.enabled:
        return "machine_disabled"
    if not _ip_allowed(ip, entry):
        return "ip_not_allowed"
    return ""


def _audit_client_id(client_id: str) -> str:
    # A secret pasted into the client_id field must not land in the audit trail.
    return "[redacted]" if SECRET_PREFIX in client_id else client_id[:128]


def _deny(
    *,
    client_id: str,
    method: str,
    entry: MachineAuthEntry | None,
    verification: Verification,
    context: RequestContext,
    blocked_for: int,
) -> None:
    client_id = _audit_client_id(client_id)
    if entry is None:
        actor = Actor(kind=ActorKind.ANONYMOUS, id=client_id, display=client_id)
        target = Target(kind="machine", id=client_id, display=client_id)
    else:
        display = entry.machine.name or client_id
        actor = Actor(kind=ActorKind.MACHINE, id=client_id, display=display)
        target = Target(kind="machine", id=client_id, display=display)
    details = {"method": method, **verification.details}
    if blocked_for:
        details["throttled_for"] = blocked_for
    # Its own transaction: the denial is recorded even though nothing else happens.
    with transaction.atomic():
        audit_record(
            event_type=EventType.TOKEN_DENIED,
            actor=actor,
            target=target,
            outcome=Outcome.FAILURE,
            reason=verification.reason,
            details=details,
            context=context,
        )
        if blocked_for and entry is not None:
            # Failures enough to throttle a known machine: its owner hears of it.
            auth_failures_notify(machine=entry.machine, now=time.time(), window=THROTTLE_WINDOW)


def client_authenticate(
    *, credentials: Credentials, context: RequestContext
) -> AuthenticatedClient:
    """The machine these credentials belong to, or ``SlowDown`` / ``ClientAuthError``."""
    now = time.time()
    method = auth_method(credentials.method)
    client_id = method.client_id_for(credentials)
    keys = throttle_keys(client_id=client_id or "", ip=context.source_ip, now=now)
    wanted = [*keys.blocks, keys.fail_pair]
    machine_key = generation_key = None
    if client_id is not None:
        # The machine's entry and its generation in the same read: the entry is
        # served only if it was stored under the generation read with it.
        machine_key, generation_key = machine_cache_keys(client_id)
        wanted[:0] = [machine_key, generation_key]
        # What the method itself reads (a federated machine's trusts), in the same round trip.
        wanted.extend(method.cache_keys(client_id))
    values = cache_safely(cache.get_many, wanted, default={})
    retry_after = throttle_retry_after(values=values, keys=keys, now=now)
    if retry_after:
        metrics.throttled(kind="client_authentication")
        raise SlowDown("Too many requests; retry later.", retry_after=retry_after)
    entry = None
    if client_id is not None:
        entry = machine_auth_entry_resolve(
            client_id, values.get(machine_key), values.get(generation_key), read_at=now
        )
    if entry is not None and method.name not in entry.machine.auth_methods:
        # Before the method's own work: a method the machine may not use verifies nothing
        # (its keys are not even loaded), whatever the credential.
        verification = Verification(reason="method_not_allowed")
    else:
        verification = method.verify(
            credentials=credentials, entry=entry, context=context, now=now, prefetched=values
        )
    if not verification.reason and entry is None:
        # A method that named no machine cannot succeed, whatever it answered.
        verification = Verification(reason="unknown_client", details=verification.details)
    if not verification.reason:
        reason = _machine_refusal(entry, context.source_ip)
        if reason:
            verification = Verification(
                reason=reason,
                credential_id=verification.credential_id,
                details=verification.details,
            )
    if not verification.reason and method.uses_secret:
        verification = secret_use_count(entry=entry, verification=verification)
    if verification.reason:
        blocked_for = cache_safely(throttle_failure_record, keys=keys, now=now, default=0)
        _deny(
            client_id=client_id or "",
            method=method.name,
            entry=entry,
            verification=verification,
            context=context,
            blocked_for=blocked_for,
        )
        raise ClientAuthError(reason=verification.reason)
    cache_safely(throttle_success_record, values=values, keys=keys)
    method.succeeded(entry=entry, verification=verification, context=context, now=now)
    return AuthenticatedClient(
        machine=entry.machine_with_relations(),
        method=method.name,
        details=verification.details,
        credential_id=verification.credential_id,
        key_kid=verification.key_kid,
    )
