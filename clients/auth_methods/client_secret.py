"""``client_secret_basic`` and ``client_secret_post`` (RFC 6749 section 2.3.1).

The secret is checked against the peppered digests in the machine's cache
entry: one HMAC-SHA256 per (pepper, digest format) in use, no SQL. The
``last_used_at`` columns are written in batches (``_last_used_touch``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import unquote_plus

from django.db import connection, transaction

from clients.auth_methods import (
    AUTHORIZATION,
    AuthMethod,
    Credentials,
    Presented,
    Verification,
)
from clients.constants import (
    CLIENT_ID_MAX_LENGTH,
    CLIENT_SECRET_MAX_LENGTH,
    LAST_USED_FLUSH_INTERVAL,
    LAST_USED_WRITE_INTERVAL,
)
from clients.credentials import (
    UnknownDigestVersion,
    UnknownPepper,
    current_pepper_id,
    secret_digest,
)
from clients.machine_cache import CachedSecret, MachineAuthEntry
from clients.models import ClientSecret, Machine
from core.errors import InvalidClient, InvalidRequest

BASIC = "client_secret_basic"
POST = "client_secret_post"


@dataclass(frozen=True)
class ClientCredentials(Credentials):
    client_id: str
    secret: str

    def __repr__(self) -> str:  # the secret never reaches a log or a traceback
        return f"ClientCredentials(client_id={self.client_id!r}, method={self.method!r})"


def is_vschar(value: str) -> bool:
    # RFC 6749 Appendix A: VSCHAR = %x20-7E; refuses NUL, controls and non-ASCII.
    return value.isascii() and value.isprintable()


def client_id_check(client_id: str, secret: str = "") -> None:
    """The shape RFC 6749 Appendix A allows a client_id (and a secret), before any lookup."""
    if len(client_id) > CLIENT_ID_MAX_LENGTH or len(secret) > CLIENT_SECRET_MAX_LENGTH:
        raise InvalidRequest("client credentials are too long")
    if not is_vschar(client_id) or not is_vschar(secret):
        raise InvalidRequest("client credentials must be printable ASCII")


def _checked(client_id: str, secret: str) -> tuple[str, str]:
    client_id_check(client_id, secret)
    if not client_id or not secret:
        raise InvalidClient("client authentication required")
    return client_id, secret


def _from_basic(header: str) -> tuple[str, str]:
    scheme, _, param = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("use HTTP Basic authentication")
    try:
        decoded = base64.b64decode(param.strip().encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError) as exc:
        raise InvalidRequest("malformed Basic credentials") from exc
    raw_id, colon, raw_secret = decoded.partition(":")
    if not colon:
        raise InvalidRequest("malformed Basic credentials")
    try:
        # RFC 6749 2.3.1: both parts are form-urlencoded before base64.
        client_id = unquote_plus(raw_id, errors="strict")
        secret = unquote_plus(raw_secret, errors="strict")
    except UnicodeError as exc:
        raise InvalidRequest("malformed Basic credentials") from exc
    return _checked(client_id, secret)


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


# Per process: secret id -> time before which this process does not record it again.
_last_used_local: dict[int, float] = {}
# Per process: usage not written yet, secret id -> (machine id, source ip, when), and
# when it was last written. Guarded by the lock (web server threads share them).
_last_used_pending: dict[int, tuple[int, str | None, float]] = {}
_last_used_flushed_at = [0.0]
_last_used_lock = threading.Lock()


def _last_used_touch(machine: Machine, secret_id: int, ip: str | None, now: float) -> None:
    """Note the use; write the noted uses of this process at most once per interval.

    A fleet's machine asks about once per token lifetime, so a write per
    request (two UPDATEs) would double the cold request's round trips. Uses
    are kept in the process and written together, one statement per table,
    by the first request after ``LAST_USED_FLUSH_INTERVAL``: ``last_used_at``
    lags by at most that long (plus the time to the next request), and a
    process that stops loses at most that much of it. Better a late
    ``last_used_at`` than a write per token request.
    """
    if _last_used_local.get(secret_id, 0.0) > now:
        return
    with _last_used_lock:
        if len(_last_used_local) > 100_000:
            _last_used_local.clear()
        _last_used_local[secret_id] = now + LAST_USED_WRITE_INTERVAL
        _last_used_pending[secret_id] = (machine.pk, ip, now)
        if now - _last_used_flushed_at[0] < LAST_USED_FLUSH_INTERVAL:
            return
        pending = dict(_last_used_pending)
        _last_used_pending.clear()
        _last_used_flushed_at[0] = now
    last_used_flush(pending)


def last_used_flush(pending: dict[int, tuple[int, str | None, float]]) -> None:
    """Write ``last_used_at`` (and the machine's ``last_used_ip``) of the given uses.

    On PostgreSQL one ``UPDATE ... FROM unnest(...)`` per table whatever the
    batch size (Django's ``bulk_update`` builds a CASE with a branch per row,
    which the server then walks for every row); elsewhere an update per row.
    """
    if not pending:
        return
    machines: dict[int, tuple[str | None, float]] = {}
    for machine_id, ip, when in pending.values():
        if machine_id not in machines or machines[machine_id][1] < when:
            machines[machine_id] = (ip, when)
    machine_rows = sorted((m, _aware(when), ip) for m, (ip, when) in machines.items())
    secret_rows = sorted((s, _aware(when)) for s, (_, _, when) in pending.items())
    with transaction.atomic():
        if connection.vendor != "postgresql":
            for machine_id, when, ip in machine_rows:
                Machine.objects.filter(pk=machine_id).update(last_used_at=when, last_used_ip=ip)
            for secret_id, when in secret_rows:
                ClientSecret.objects.filter(pk=secret_id).update(last_used_at=when)
            return
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Machine._meta.db_table} AS m SET last_used_at = v.at, "  # noqa: S608
                "last_used_ip = v.ip FROM unnest(%s::bigint[], %s::timestamptz[], %s::inet[]) "
                "AS v(id, at, ip) WHERE m.id = v.id",
                [list(column) for column in zip(*machine_rows, strict=True)],
            )
            cursor.execute(
                f"UPDATE {ClientSecret._meta.db_table} AS s SET last_used_at = v.at "  # noqa: S608
                "FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, at) WHERE s.id = v.id",
                [list(column) for column in zip(*secret_rows, strict=True)],
            )


def _aware(posix: float) -> datetime:
    return datetime.fromtimestamp(posix, tz=UTC)


def last_used_reset() -> None:
    """Forget this process's noted uses (tests)."""
    with _last_used_lock:
        _last_used_local.clear()
        _last_used_pending.clear()
        _last_used_flushed_at[0] = 0.0


class _ClientSecretMethod(AuthMethod):
    uses_secret = True

    def verify(self, *, credentials, entry, context, now, prefetched) -> Verification:
        if entry is None:
            # Same work as a known client, so timing says little about existence.
            secret_digest(
                secret=credentials.secret,
                client_id=credentials.client_id,
                pepper_id=current_pepper_id(),
            )
            return Verification(reason="unknown_client")
        match = _matching_secret(entry, credentials.secret)
        if match is None:
            return Verification(reason="wrong_secret")
        if match.revoked_at is not None:
            return Verification(reason="secret_revoked", credential_id=match.id)
        if match.expires_at is not None and match.expires_at <= now:
            return Verification(reason="secret_expired", credential_id=match.id)
        if match.not_before is not None and now < match.not_before:
            return Verification(reason="secret_not_yet_valid", credential_id=match.id)
        return Verification(credential_id=match.id)

    def succeeded(self, *, entry, verification, context, now) -> None:
        _last_used_touch(entry.machine, verification.credential_id, context.source_ip, now)


class ClientSecretBasic(_ClientSecretMethod):
    """The secret in HTTP Basic (RFC 6749 2.3.1, RFC 7617), each part form-urlencoded."""

    name = BASIC
    label = "Client secret, HTTP Basic (client_secret_basic)"
    carried_in = frozenset({AUTHORIZATION})

    def presents(self, presented: Presented) -> bool:
        return presented.authorization is not None

    def parse(self, presented: Presented) -> ClientCredentials:
        client_id, secret = _from_basic(presented.authorization)
        form_id = presented.value("client_id")
        if form_id is not None and form_id != client_id:
            raise InvalidRequest("client_id differs from the Basic credentials")
        return ClientCredentials(client_id=client_id, secret=secret, method=BASIC)


class ClientSecretPost(_ClientSecretMethod):
    """``client_id`` and ``client_secret`` in the form body (RFC 6749 2.3.1)."""

    name = POST
    label = "Client secret, in the form body (client_secret_post)"
    carried_in = frozenset({"client_secret"})

    def presents(self, presented: Presented) -> bool:
        return presented.value("client_secret") is not None

    def parse(self, presented: Presented) -> ClientCredentials:
        client_id = presented.value("client_id")
        if client_id is None:
            raise InvalidRequest("client_id is required")
        client_id, secret = _checked(client_id, presented.value("client_secret"))
        return ClientCredentials(client_id=client_id, secret=secret, method=POST)
