"""Client authentication methods as a registry: each reads its credentials and verifies them.

A method is one module with a class like ``client_secret.ClientSecretBasic``
and a line in ``AUTH_METHOD_CLASSES``. ``clients.authentication`` asks every
method whether the request presents its credentials (exactly one may), lets
it parse them (``parse``: shape only, nothing recorded) and then verify them
against the machine's cache entry (``verify``); the flow around it
(throttling, the method allow-list of the machine, enabled, IP allow-list,
audit) is the same for every method. The token, introspection and revocation
endpoints, discovery and the console ask this registry, so what is advertised
is what is served.

A JWT-assertion method shares ``clients.client_assertion`` (``Presented.assertion``
reads the assertion once per request): ``private_key_jwt`` takes the assertions
whose ``iss`` is the machine itself; a federation method takes those from
another issuer, may find the machine itself (``client_id_for`` returning the
machine a trust names, or ``None`` for none), and returns what the
``token.issued`` event must record in ``Verification.details``.

The classes load on first use (not at import), like ``tokens.grants``, so the
registry can be asked without importing what the methods call.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from django.utils.module_loading import import_string

from core.errors import InvalidRequest

if TYPE_CHECKING:
    from audit.context import RequestContext
    from clients.client_assertion import ClientAssertion
    from clients.machine_cache import MachineAuthEntry

AUTH_METHOD_CLASSES = (
    "clients.auth_methods.client_secret.ClientSecretBasic",
    "clients.auth_methods.client_secret.ClientSecretPost",
    "clients.auth_methods.private_key_jwt.PrivateKeyJWT",
    "clients.auth_methods.federated_jwt.FederatedJwt",
)

# Where a method's credentials may travel besides the form: the HTTP Authorization header.
AUTHORIZATION = "Authorization"

# Parameters of client authentication (RFC 6749 2.3.1, RFC 7521 4.2): protocol
# parameters at every endpoint, so none of them may repeat (RFC 6749 3.2),
# whichever methods are registered.
CLIENT_AUTH_PARAMETERS = frozenset(
    {"client_id", "client_secret", "client_assertion", "client_assertion_type"}
)
# Where a JWT assertion travels (RFC 7521 4.2): half of it present is still an assertion,
# refused as incomplete by ``client_assertion.client_assertion_read``.
ASSERTION_PARAMETERS = frozenset({"client_assertion", "client_assertion_type"})


@dataclass(frozen=True)
class Credentials:
    """What a method read from the request; subclasses add their own fields.

    ``client_id`` is the machine the credentials claim to be, or ``None`` when
    the method finds the machine itself (``AuthMethod.client_id_for``).
    """

    client_id: str | None
    method: str


@dataclass(frozen=True)
class Verification:
    """A method's verdict on credentials against a machine's cache entry.

    ``reason`` is empty on success, else the precise cause for the audit
    trail only (the client always gets the same ``invalid_client``).
    ``credential_id`` names the secret that matched (for ``last_used_at``
    and self-rotation); ``key_kid`` the registered key whose signature
    verified (a machine replacing its own key replaces that one);
    ``details`` go into the ``token.issued`` event of a success and the
    ``token.denied`` event of a failure (never a secret).
    """

    reason: str = ""
    credential_id: int | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    key_kid: str | None = None


@dataclass
class Presented:
    """The client-authentication part of a request, read once and shared by every method.

    ``assertion_audiences`` is what an assertion of the machine's own
    (``private_key_jwt``) must name in ``aud`` at this endpoint; ``None``: the
    token endpoint's rule (``client_assertion.assertion_audiences``).
    """

    authorization: str | None
    form: Mapping[str, list[str]]
    assertion_audiences: frozenset[str] | None = None

    def value(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None

    @functools.cached_property
    def assertion(self) -> ClientAssertion | None:
        """The ``client_assertion`` (RFC 7521 4.2), read once for every JWT method."""
        from clients.client_assertion import client_assertion_read

        return client_assertion_read(self.form)


class AuthMethod:
    """One client authentication method (RFC 8414 ``token_endpoint_auth_methods_supported``).

    ``carried_in`` names where its credentials travel (``AUTHORIZATION`` and form
    parameters of ``CLIENT_AUTH_PARAMETERS``): ``presents`` is asked only of the
    methods with something there, so a request pays for the methods it uses, not
    for every registered one; ``uses_secret``
    says a machine allowed this method needs a client secret;
    ``signing_algorithms`` are the JWS algorithms it accepts
    (``token_endpoint_auth_signing_alg_values_supported``).
    """

    name: ClassVar[str]
    label: ClassVar[str]
    carried_in: ClassVar[frozenset[str]]
    uses_secret: ClassVar[bool] = False
    signing_algorithms: ClassVar[tuple[str, ...]] = ()

    def presents(self, presented: Presented) -> bool:
        """Whether the request carries this method's credentials (at most one method may).

        Asked only when something is in ``carried_in``; ``True`` only then.
        """
        raise NotImplementedError

    def parse(self, presented: Presented) -> Credentials:
        """The credentials, or ``InvalidRequest``/``InvalidClient`` for an unreadable shape.

        Nothing is recorded for these: they are refused before anyone is asked.
        """
        raise NotImplementedError

    def client_id_for(self, credentials: Credentials) -> str | None:
        """Whose cache entry to fetch; ``None`` for credentials that name no machine."""
        return credentials.client_id

    def cache_keys(self, client_id: str) -> tuple[str, ...]:
        """Shared-cache keys ``verify`` reads for this machine (none by default).

        ``clients.authentication`` fetches them in the same round trip as the
        machine's entry and the throttle state, and hands ``verify`` what came
        back as ``prefetched`` (a key absent there: missing, or the cache is down).
        """
        return ()

    def verify(
        self,
        *,
        credentials: Credentials,
        entry: MachineAuthEntry | None,
        context: RequestContext,
        now: float,
        prefetched: Mapping[str, Any],
    ) -> Verification:
        """Whether the credentials are the machine's (``entry`` None: unknown client).

        Only the credential itself: the method allow-list, the enabled flag and
        the IP allow-list are checked by ``clients.authentication`` for every method.
        ``prefetched``: what the cache returned for ``cache_keys``.
        """
        raise NotImplementedError

    def succeeded(
        self,
        *,
        entry: MachineAuthEntry,
        verification: Verification,
        context: RequestContext,
        now: float,
    ) -> None:
        """Bookkeeping after a success (``last_used_at``); nothing by default."""


@functools.cache
def auth_methods() -> dict[str, AuthMethod]:
    loaded = (import_string(path)() for path in AUTH_METHOD_CLASSES)
    return {method.name: method for method in loaded}


def auth_method(name: str) -> AuthMethod:
    """The registered method called ``name``; ``KeyError`` for any other."""
    return auth_methods()[name]


def auth_methods_supported() -> list[str]:
    return list(auth_methods())


def auth_methods_with_secret() -> frozenset[str]:
    return frozenset(name for name, method in auth_methods().items() if method.uses_secret)


def auth_signing_algorithms() -> list[str]:
    """Every JWS algorithm some method accepts, in the order the methods list them."""
    algorithms: dict[str, None] = {}
    for method in auth_methods().values():
        algorithms.update(dict.fromkeys(method.signing_algorithms))
    return list(algorithms)


def auth_method_choices() -> list[tuple[str, str]]:
    """(name, label) pairs for the console."""
    return [(name, method.label) for name, method in auth_methods().items()]


def auth_methods_check(names: list[str] | tuple[str, ...]) -> list[str]:
    """Names of registered methods, in registry order, deduplicated; ``ValueError`` otherwise."""
    unknown = sorted(set(names) - set(auth_methods()))
    if unknown:
        raise ValueError(f"Unknown authentication method(s): {', '.join(unknown)}.")
    return [name for name in auth_methods() if name in names]


def presented_method(presented: Presented) -> AuthMethod | None:
    """The one method whose credentials the request carries; None if none does.

    Two methods at once (Basic and a ``client_secret`` in the body, Basic and
    an assertion) are refused: RFC 6749 2.3 says a client uses one.
    """
    carried = presented.form.keys() & CLIENT_AUTH_PARAMETERS
    if presented.authorization is not None:
        carried.add(AUTHORIZATION)
    found = [
        method
        for method in auth_methods().values()
        if not method.carried_in.isdisjoint(carried) and method.presents(presented)
    ]
    if len(found) > 1:
        raise InvalidRequest("use one client authentication method, not two")
    return found[0] if found else None
