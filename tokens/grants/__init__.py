"""Grant types as a registry: each grant parses its parameters and decides what to issue.

A grant is one module with a class like ``client_credentials.ClientCredentialsGrant``
and a line in ``GRANT_CLASSES``. The token endpoint looks the ``grant_type`` up
here, lets the grant parse the form and decide (``TokenDecision``), and hands the
decision to ``tokens.services.token_issue``, the one path that signs, records and
audits whatever a grant decided. Discovery lists ``grant_types_supported`` from
here, so what is advertised is what is served.

The classes load on first use (not at import), so selectors may ask the
registry without importing the services the grants call.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, ClassVar

from django.utils.module_loading import import_string

from core.errors import UnsupportedGrantType

GRANT_CLASSES = ("tokens.grants.client_credentials.ClientCredentialsGrant",)


class Grant:
    """One grant type of the token endpoint (RFC 6749 section 4 and its extensions).

    ``parameters`` names the protocol parameters the grant defines: those may
    not repeat, every other parameter is ignored (RFC 6749 section 3.2).
    """

    grant_type: ClassVar[str]
    parameters: ClassVar[frozenset[str]] = frozenset()

    def parse(self, form: Mapping[str, list[str]]) -> Any:
        """The grant's own parameters from the form, or the RFC 6749 error; changes nothing."""
        raise NotImplementedError

    def decide(self, *, machine, params: Any, context):
        """What to issue to the authenticated ``machine`` (a ``TokenDecision``), or the error."""
        raise NotImplementedError


@functools.cache
def grants() -> dict[str, Grant]:
    loaded = (import_string(path)() for path in GRANT_CLASSES)
    return {grant.grant_type: grant for grant in loaded}


def grant_for(grant_type: str) -> Grant:
    grant = grants().get(grant_type)
    if grant is None:
        raise UnsupportedGrantType(f"Supported grant types: {', '.join(grant_types_supported())}.")
    return grant


def grant_types_supported() -> list[str]:
    return list(grants())
