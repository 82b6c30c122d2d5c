"""The RFC 6749 section 5.2 error types of the protocol endpoints: one hierarchy for every app.

Each class carries its RFC error code and HTTP status and cites where the
code is defined; ``tokens.views.protocol`` turns any of them into the JSON
answer (with the ``WWW-Authenticate`` challenge a 401 needs).
"""

from __future__ import annotations


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error response: ``{"error": ..., "error_description": ...}``."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str = "") -> None:
        super().__init__(description)
        self.description = description


class InvalidRequest(OAuthError):
    """RFC 6749 5.2: malformed, duplicated or missing parameter."""


class InvalidClient(OAuthError):
    """RFC 6749 5.2: client authentication failed; 401 with a challenge (RFC 9110 15.5.2).

    One description for every cause: an unknown client and a wrong secret must
    be indistinguishable from outside (the reason goes to the audit trail only).
    """

    error = "invalid_client"
    status = 401

    def __init__(self, description: str = "Client authentication failed.") -> None:
        super().__init__(description)


class UnauthorizedClient(OAuthError):
    """RFC 6749 5.2 / RFC 7009 2.1: an authenticated client not allowed to do this."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """RFC 6749 5.2: a grant type this server does not offer."""

    error = "unsupported_grant_type"


class UnsupportedTokenType(OAuthError):
    """RFC 7009 2.2.1: a revocation of a token type this server cannot revoke."""

    error = "unsupported_token_type"


class InvalidScope(OAuthError):
    """RFC 6749 5.2: a scope the machine may not have, or a malformed scope."""

    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """RFC 8707 section 2: a resource the machine may not address."""

    error = "invalid_target"


class InsufficientScope(OAuthError):
    """RFC 6750 section 3.1: the caller lacks the scope this endpoint needs."""

    error = "insufficient_scope"
    status = 403


class SlowDown(OAuthError):
    """Too many failures from this source: 429 with ``Retry-After`` (RFC 6585 section 4)."""

    error = "slow_down"
    status = 429

    def __init__(self, description: str = "", *, retry_after: int = 1) -> None:
        super().__init__(description)
        self.retry_after = retry_after


class TemporarilyUnavailable(OAuthError):
    """No active signing key, or the database is away: refuse clearly, never a 500."""

    error = "temporarily_unavailable"
    status = 503


class ServerError(OAuthError):
    """RFC 6749 5.2 ``server_error``: something unexpected; the details go to the log only."""

    error = "server_error"
    status = 500
