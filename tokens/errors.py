"""Protocol errors of our endpoints, each carrying its RFC error code and status."""

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


class UnsupportedGrantType(OAuthError):
    """RFC 6749 5.2: a grant type this server does not offer."""

    error = "unsupported_grant_type"


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


class TemporarilyUnavailable(OAuthError):
    """No active signing key, or the database is away: refuse clearly, never a 500."""

    error = "temporarily_unavailable"
    status = 503
