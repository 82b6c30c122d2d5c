"""The client credentials grant (RFC 6749 section 4.4), with RFC 8707 resources.

Parses ``scope`` and ``resource``; decides with the machine's allowed and
default scopes and audiences (``tokens.services.token_decide``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from core.errors import InvalidScope, InvalidTarget
from tokens.constants import GRANT_CLIENT_CREDENTIALS
from tokens.grants import Grant
from tokens.services import TokenDecision, token_decide

# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,64}$")
MAX_SCOPES = 32


@dataclass(frozen=True)
class ClientCredentialsParams:
    scopes: list[str] | None  # None: the machine's default scopes
    resource: str | None  # None: the machine's default audience


def _single(form: Mapping[str, list[str]], name: str) -> str | None:
    values = form.get(name)
    return values[0] if values else None


def _scopes(form: Mapping[str, list[str]]) -> list[str] | None:
    value = _single(form, "scope")
    if value is None:
        return None
    scopes = [item for item in value.split(" ") if item]
    if not scopes or len(scopes) > MAX_SCOPES or not all(map(_SCOPE_TOKEN.match, scopes)):
        raise InvalidScope("The scope parameter is malformed.")
    return scopes


def _resource(form: Mapping[str, list[str]]) -> str | None:
    values = form.get("resource") or []
    if not values:
        return None
    if len(values) > 1:
        raise InvalidTarget("One resource per token.")
    resource = values[0]
    # RFC 8707 section 2: an absolute URI without a fragment.
    try:
        parts = urlsplit(resource)
    except ValueError as exc:  # e.g. "http://[::1": an unclosed IPv6 literal
        raise InvalidTarget("The resource must be an absolute URI without a fragment.") from exc
    if not parts.scheme or not (parts.netloc or parts.path) or "#" in resource:
        raise InvalidTarget("The resource must be an absolute URI without a fragment.")
    return resource


class ClientCredentialsGrant(Grant):
    grant_type = GRANT_CLIENT_CREDENTIALS
    # ``resource`` may repeat in RFC 8707; the grant answers invalid_target for more than one.
    parameters = frozenset({"grant_type", "scope"})

    def parse(self, form: Mapping[str, list[str]]) -> ClientCredentialsParams:
        return ClientCredentialsParams(scopes=_scopes(form), resource=_resource(form))

    def decide(self, *, machine, params: ClientCredentialsParams, context) -> TokenDecision:
        return token_decide(
            machine=machine,
            scopes=params.scopes,
            resource=params.resource,
            grant_type=self.grant_type,
            context=context,
        )
