"""Client assertions (RFC 7521 4.2, RFC 7523 2.2 and 3): what every JWT method shares.

``private_key_jwt`` (the machine signs with its own key) and ``federated_jwt``
(a workload presents a token from an issuer it runs under) both send
``client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer``
and a compact JWS as ``client_assertion``. This module reads it once per
request (size limit, JWS split, header and claims decoded but not trusted),
and gives both methods the same checks: the algorithm allow-list of
``core.jose`` (never ``none`` or HMAC), the signature with a key the method
chose, ``exp``/``nbf``/``iat`` against the clock, ``aud``, and the replay
cache that lets a ``jti`` be used once until the assertion expires.

Each check returns a reason (empty when it holds) rather than raising: the
method turns a reason into the one ``invalid_client`` answer, and the reason
goes to the audit trail only.

The replay cache lives in the shared cache (one ``add`` per assertion); when
the cache is unreachable the database table ``UsedAssertion`` takes over, so
an outage does not open a replay window. Expired rows are purged by beat.
Someone who can write the cache can delete a ``jti`` to replay an assertion
they captured; the assertion itself expires within minutes, which bounds it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, transaction
from django.urls import reverse

from clients.machine_cache import CACHE_ERRORS
from clients.models import UsedAssertion
from core import jose
from core.errors import InvalidClient, InvalidRequest

JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# An assertion longer than this is refused before it is decoded (a GitHub Actions
# token is about 1.5 KB, a Kubernetes service-account token about 1 KB).
MAX_ASSERTION_LENGTH = jose.MAX_JWS_LENGTH
# Clock skew tolerated between the client and us, seconds (nbf, iat, and exp's bound).
CLOCK_LEEWAY = 30
# The longest ``jti`` remembered; longer ones are refused, not truncated.
MAX_JTI_LENGTH = 256


@dataclass(frozen=True)
class ClientAssertion:
    """A ``client_assertion`` as read from the form: decoded, not yet trusted.

    ``problem`` names why it could not be decoded (too large, not a JWS); the
    method then refuses it like any other failure, audited and throttled.
    ``client_id`` is the form's ``client_id``, if any.
    """

    raw: str = field(repr=False)
    client_id: str | None
    parsed: jose.ParsedJWS | None = field(default=None, repr=False)
    problem: str = ""

    @property
    def header(self) -> Mapping[str, Any]:
        return self.parsed.header if self.parsed else {}

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.parsed.claims if self.parsed else {}

    def claim_str(self, name: str) -> str | None:
        """A claim that must be a string, else None."""
        value = self.claims.get(name)
        return value if isinstance(value, str) else None


def client_assertion_read(form: Mapping[str, list[str]]) -> ClientAssertion | None:
    """The request's client assertion, None if it carries none.

    Half an assertion, or another assertion type, is refused at once
    (nothing recorded); an undecodable assertion is returned with its
    ``problem`` so the method records the refusal.
    """
    raw = (form.get("client_assertion") or [None])[0]
    assertion_type = (form.get("client_assertion_type") or [None])[0]
    if raw is None and assertion_type is None:
        return None
    if raw is None or assertion_type is None:
        raise InvalidRequest("client_assertion and client_assertion_type go together")
    if assertion_type != JWT_BEARER:
        raise InvalidClient("unsupported client_assertion_type")
    client_id = (form.get("client_id") or [None])[0]
    if len(raw) > MAX_ASSERTION_LENGTH:
        return ClientAssertion(raw="", client_id=client_id, problem="assertion_too_large")
    try:
        parsed = jose.jws_parse(raw)
    except jose.InvalidJWS:
        return ClientAssertion(raw=raw, client_id=client_id, problem="malformed_assertion")
    return ClientAssertion(raw=raw, client_id=client_id, parsed=parsed)


# Per process: issuer -> the audiences. ``reverse`` costs as much as verifying the
# signature, and the answer changes only with the ISSUER setting.
_audiences: dict[str, frozenset[str]] = {}


def assertion_audiences() -> frozenset[str]:
    """What a client assertion of ours names in ``aud``: the token endpoint URL or the issuer.

    RFC 7523 3 and OpenID Connect Core 9 name the token endpoint; RFC 7523bis
    and many libraries name the issuer. Both identify this server alone.
    """
    issuer = settings.ISSUER
    audiences = _audiences.get(issuer)
    if audiences is None:
        audiences = _audiences[issuer] = frozenset({issuer, issuer + reverse("oauth-token")})
    return audiences


def assertion_header_check(assertion: ClientAssertion) -> str:
    """The JOSE header: an allowed algorithm, no extension we would have to understand."""
    if assertion.parsed is None:
        return assertion.problem or "malformed_assertion"
    header = assertion.header
    if header.get("alg") not in jose.ALGORITHMS:
        return "algorithm_not_allowed"
    if "crit" in header:  # RFC 7515 4.1.11: extensions we do not implement must be refused
        return "unsupported_header"
    if "kid" in header and not isinstance(header["kid"], str):
        return "malformed_assertion"
    return ""


def assertion_signature_check(
    assertion: ClientAssertion, verifiers: Iterable[jose.Verifier]
) -> jose.Verifier | None:
    """The key that verifies the signature, among those of the header's algorithm.

    The caller picks the candidates (by ``kid``, or every key of the machine
    when the header names none); a key verifies only in its own algorithm, so
    an HMAC or ``none`` header never matches.
    """
    parsed = assertion.parsed
    if parsed is None:
        return None
    alg = assertion.header.get("alg")
    for verifier in verifiers:
        if verifier.algorithm == alg and verifier.verify(parsed.signing_input, parsed.signature):
            return verifier
    return None


def _number(value: Any) -> float | None:
    # bool is an int in Python; NaN and infinities (which json.loads accepts) compare falsely.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def assertion_claims_check(
    assertion: ClientAssertion,
    *,
    audiences: Collection[str],
    now: float,
    max_lifetime: int | None,
) -> str:
    """``exp`` (required, in the future, at most ``max_lifetime`` ahead), ``nbf``, ``iat``,
    ``aud`` (one of ``audiences``) and ``jti`` (required)."""
    claims = assertion.claims
    exp = _number(claims.get("exp"))
    if exp is None:
        return "exp_missing"
    if exp <= now:
        return "expired"
    if max_lifetime is not None and exp > now + max_lifetime + CLOCK_LEEWAY:
        return "exp_too_far"
    for name, reason in (("nbf", "not_yet_valid"), ("iat", "issued_in_future")):
        if name in claims:
            value = _number(claims[name])
            if value is None:
                return f"{name}_malformed"
            if value > now + CLOCK_LEEWAY:
                return reason
    aud = claims.get("aud")
    named = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(item, str) and item in audiences for item in named):
        return "wrong_audience"
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        return "jti_missing"
    return ""


def _replay_key(issuer: str, jti: str) -> str:
    digest = hashlib.sha256(f"{issuer}\x00{jti}".encode()).hexdigest()
    return digest[:48]


def assertion_jti_consume(*, issuer: str, jti: str, expires_at: float, now: float) -> bool:
    """True the first time (``issuer``, ``jti``) is seen before ``expires_at``; False on replay.

    One ``cache.add`` (atomic in Redis: of two concurrent uses, one wins). When
    the cache is unreachable, a row in ``UsedAssertion`` (its unique key decides).
    """
    key = _replay_key(issuer, jti)
    timeout = max(1, math.ceil(expires_at - now))
    try:
        return bool(cache.add(f"clients:jti:{key}", 1, timeout))
    except CACHE_ERRORS:
        pass
    expires = datetime.fromtimestamp(expires_at, tz=UTC)
    try:
        with transaction.atomic():
            UsedAssertion.objects.filter(
                key=key, expires_at__lte=datetime.fromtimestamp(now, tz=UTC)
            ).delete()
            UsedAssertion.objects.create(key=key, expires_at=expires)
    except IntegrityError:
        return False
    return True


def used_assertions_purge(*, now: datetime) -> int:
    """Delete the replay rows of assertions that have expired (they can no longer be replayed)."""
    deleted, _ = UsedAssertion.objects.filter(expires_at__lte=now).delete()
    return deleted
