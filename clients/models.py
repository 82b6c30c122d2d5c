"""Machines, their secrets, and the registries of scopes and audiences."""

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from oauth2_provider.models import AbstractApplication

from clients.choices import StaleAction
from clients.constants import DEFAULT_AUTH_METHODS, DIGEST_VERSION

# RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
scope_token_validator = RegexValidator(
    r"^[\x21\x23-\x5B\x5D-\x7E]{1,64}$", "A scope is 1-64 printable ASCII characters, no space."
)


class Scope(models.Model):
    """A right a machine may be given; admins manage the registry."""

    name = models.CharField(max_length=64, unique=True, validators=[scope_token_validator])
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Audience(models.Model):
    """A resource server, named by the URI that goes into a token's ``aud`` (RFC 8707)."""

    uri = models.CharField(max_length=255, unique=True)
    name = models.CharField(max_length=255, blank=True, default="")
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["uri"]

    def __str__(self) -> str:
        return self.uri


# The columns of django-oauth-toolkit's Application that the portal does not use,
# each pinned by a database constraint to the one value that says so, so that no
# row (written by the console, a script or someone holding the database) can
# suggest that a machine has a redirect URI, a toolkit secret, an owner or an
# OIDC algorithm that something honours. The portal uses ``client_id``,
# ``name``, ``created`` and ``updated`` for what they say.
TOOLKIT_PINNED_COLUMNS = {
    # Every machine is a confidential client (RFC 6749 section 2.1) ...
    "client_type": AbstractApplication.CLIENT_CONFIDENTIAL,
    # ... of the client credentials grant; the grants served are tokens.grants.
    "authorization_grant_type": AbstractApplication.GRANT_CLIENT_CREDENTIALS,
    # Credentials are ClientSecret rows (peppered digests), never this column.
    "client_secret": "",
    "hash_client_secret": False,
    # No browser flows: no redirects, no logout redirects, no CORS, no consent page.
    "redirect_uris": "",
    "post_logout_redirect_uris": "",
    "allowed_origins": "",
    "skip_authorization": False,
    # ID tokens are signed by tokens.keyring's keys, not by the toolkit's per-client algorithm.
    "algorithm": AbstractApplication.NO_ALGORITHM,
    # Machines are registered by security admins (created_by), never by dynamic registration.
    "registration_source": AbstractApplication.RegistrationSource.MANUAL.value,
    "user": None,
    "cimd_expires_at": None,
}


def _pinned_condition(column: str, value) -> models.Q:
    return models.Q(**{f"{column}__isnull": True} if value is None else {column: value})


def default_auth_methods() -> list[str]:
    return list(DEFAULT_AUTH_METHODS)


class Machine(AbstractApplication):
    """A service, device or job that authenticates with the client credentials grant.

    The swapped django-oauth-toolkit Application. Always a confidential client
    with the client credentials grant only; its credentials are ``ClientSecret``
    rows. The toolkit's columns it does not use are pinned by database
    constraints (``TOOLKIT_PINNED_COLUMNS``). ``subject`` is the stable ``sub``
    of its tokens, independent of its client_id.
    """

    subject = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    description = models.TextField(blank=True, default="")
    owner_team = models.CharField(max_length=255, blank=True, default="")
    owner_email = models.EmailField(blank=True, default="")
    tags = models.JSONField(default=list, blank=True)
    enabled = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="machines_created",
    )
    allowed_scopes = models.ManyToManyField(Scope, blank=True, related_name="machines")
    default_scopes = models.ManyToManyField(Scope, blank=True, related_name="default_for")
    allowed_audiences = models.ManyToManyField(Audience, blank=True, related_name="machines")
    default_audience = models.ForeignKey(
        Audience, null=True, blank=True, on_delete=models.PROTECT, related_name="default_for"
    )
    access_token_ttl = models.PositiveIntegerField(default=600, help_text="Seconds.")
    max_secret_age = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds; a secret older than this expires. Empty: the default "
        "(SECRET_MAX_AGE); 0: never.",
    )
    secret_warning_period = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Seconds before a secret's maximum age its owner is warned. "
        "Empty: the default (SECRET_WARNING_PERIOD).",
    )
    stale_action = models.CharField(
        max_length=16,
        choices=StaleAction.choices,
        blank=True,
        default="",
        help_text="What happens when the machine is unused for STALE_MACHINE_DAYS. "
        "Empty: the default (STALE_MACHINE_ACTION).",
    )
    # When the machine was last reported stale; a machine used since is judged afresh.
    stale_reported_at = models.DateTimeField(null=True, blank=True)
    rotation_grace = models.PositiveIntegerField(
        default=24 * 3600, help_text="Seconds the previous secret keeps working after a rotation."
    )
    ip_allowlist = models.JSONField(default=list, blank=True, help_text="CIDRs; empty: any.")
    auth_methods = models.JSONField(
        default=default_auth_methods,
        help_text="The client authentication methods this machine may use.",
    )
    # private_key_jwt: where the machine publishes its public keys, when it registers none.
    # The binding (clients.credentials.jwks_uri_binding) is an HMAC under a server
    # pepper: a URL written into the row by anyone else is never fetched.
    jwks_uri = models.CharField(max_length=2048, blank=True, default="")
    jwks_uri_binding = models.CharField(max_length=64, blank=True, default="")
    jwks_uri_pepper_id = models.CharField(max_length=32, blank=True, default="")
    last_used_at = models.DateTimeField(null=True, blank=True)
    last_used_ip = models.GenericIPAddressField(null=True, blank=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractApplication.Meta):
        swappable = "OAUTH2_PROVIDER_APPLICATION_MODEL"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=_pinned_condition(column, value), name=f"machine_unused_{column}"
            )
            for column, value in TOOLKIT_PINNED_COLUMNS.items()
        ]

    def __str__(self) -> str:
        return self.name or self.client_id


class ClientSecret(models.Model):
    """One credential of a machine, stored only as a peppered HMAC-SHA256 digest.

    Several per machine, so a rotation has a grace period. ``pepper_id`` names
    the server pepper that keyed ``digest`` so peppers can rotate too. The
    digest covers the machine's client_id (``digest_version``, see
    ``clients.credentials``), so the row authenticates nothing if it is moved
    to another machine. People recognise a secret by ``display_prefix`` and
    ``last_four``.
    """

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="secrets")
    digest = models.CharField(max_length=64, unique=True)
    digest_version = models.PositiveSmallIntegerField(default=DIGEST_VERSION)
    pepper_id = models.CharField(max_length=32)
    display_prefix = models.CharField(max_length=32)
    last_four = models.CharField(max_length=4)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=255, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Bootstrap credentials (as Vault's secret_id_num_uses and a not-before time): the
    # secret authenticates only from ``not_before`` on, and at most ``max_uses`` times.
    not_before = models.DateTimeField(null=True, blank=True)
    max_uses = models.PositiveIntegerField(null=True, blank=True)
    use_count = models.PositiveIntegerField(default=0)
    # The lifecycle's state guards: set once by the periodic expiry job, each with its
    # audit event and notification, so neither is ever sent twice.
    warned_at = models.DateTimeField(null=True, blank=True)
    expired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_prefix}…{self.last_four}"


class ClientKey(models.Model):
    """A public key a machine signs its ``private_key_jwt`` assertions with (at most two).

    Only the public JWK is stored. The row grants power (whoever holds the
    private half authenticates as the machine), so it is bound to the server:
    ``binding`` is an HMAC under the pepper ``pepper_id`` over the machine's
    client_id, the kid and the JWK (``clients.credentials.client_key_binding``).
    A key inserted or edited in the database, or moved to another machine,
    fails the binding and verifies nothing.
    """

    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="keys")
    kid = models.CharField(max_length=128)
    thumbprint = models.CharField(max_length=64)
    public_jwk = models.JSONField()
    binding = models.CharField(max_length=64)
    pepper_id = models.CharField(max_length=32)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(fields=["machine", "kid"], name="client_key_unique_kid"),
            models.UniqueConstraint(
                fields=["machine", "thumbprint"], name="client_key_unique_thumbprint"
            ),
        ]

    def __str__(self) -> str:
        return self.kid


class UsedAssertion(models.Model):
    """A client assertion's ``jti`` seen while the shared cache was unreachable.

    The replay cache's fallback (``clients.client_assertion``): the unique key
    refuses a second use until the assertion expires; beat purges expired rows.
    """

    key = models.CharField(max_length=48, unique=True)
    expires_at = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return self.key


class ApiIdempotencyKey(models.Model):
    """The first answer to a management API POST sent with an ``Idempotency-Key``.

    A retry of the same request by the same caller gets this answer back instead
    of doing the change twice. ``body`` never holds a secret (``secret_withheld``
    says one was removed: a secret is shown once). The row grants nothing, so it
    needs no binding to a server secret: forging one can only make a caller's own
    retry answer wrongly, which needs that caller's key. Kept for
    ``MANAGEMENT_API_IDEMPOTENCY_TTL``.
    """

    caller = models.CharField(max_length=300)
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.PositiveSmallIntegerField(null=True)
    body = models.JSONField(null=True)
    secret_withheld = models.BooleanField(default=False)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["caller", "key"], name="api_idempotency_caller_key")
        ]

    def __str__(self) -> str:
        return f"{self.caller} {self.key}"


class FederationTrust(models.Model):
    """A trust policy: tokens from ``issuer`` that pass it authenticate as ``machine``.

    Workload identity federation (``clients.federation``): a GitHub Actions
    job, a Kubernetes pod or any OIDC workload presents the JWT its platform
    gave it, and this row says which of those tokens may act as the machine:
    the issuer, the audience the token must carry, optionally its exact
    ``sub``, and optionally a CEL ``condition`` over its claims. ``jwks`` holds
    the issuer's public keys when they were pasted in (a Kubernetes API server
    the portal cannot reach); empty means: fetched through the issuer's
    discovery document.

    The row grants power, so it is bound to a server secret: ``binding`` is an
    HMAC under a key derived from the pepper ``pepper_id`` over ``uid``, the
    machine's client_id and every field above. A row written or edited in the
    database without the peppers (or moved to another machine) authenticates
    nothing (``clients.federation.binding``).
    """

    uid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    machine = models.ForeignKey(Machine, on_delete=models.CASCADE, related_name="trusts")
    issuer = models.CharField(max_length=255)
    audience = models.CharField(max_length=255)
    subject = models.CharField(max_length=255, blank=True, default="")
    condition = models.TextField(blank=True, default="")
    jwks = models.TextField(blank=True, default="")
    template = models.CharField(max_length=32, blank=True, default="")
    description = models.CharField(max_length=255, blank=True, default="")
    pepper_id = models.CharField(max_length=32)
    binding = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    created_by = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [models.Index(fields=["issuer", "subject"], name="trust_issuer_subject")]

    def __str__(self) -> str:
        return f"{self.issuer} ({self.subject or 'any subject'})"
