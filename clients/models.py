"""Machines, their secrets, and the registries of scopes and audiences."""

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from oauth2_provider.models import AbstractApplication

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
        null=True, blank=True, help_text="Seconds; a secret older than this expires. Empty: none."
    )
    rotation_grace = models.PositiveIntegerField(
        default=24 * 3600, help_text="Seconds the previous secret keeps working after a rotation."
    )
    ip_allowlist = models.JSONField(default=list, blank=True, help_text="CIDRs; empty: any.")
    auth_methods = models.JSONField(
        default=default_auth_methods,
        help_text="The client authentication methods this machine may use.",
    )
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

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.display_prefix}…{self.last_four}"
