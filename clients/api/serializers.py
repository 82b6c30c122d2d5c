"""Shapes of the management API: what a machine, a secret, a scope and an audience look like.

Input serializers only check shapes; the services decide (registries, limits,
defaults), so the API, the console and the CLI refuse the same things.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework import serializers

from clients.federation.templates import TEMPLATES
from clients.models import Audience, ClientSecret, Machine, Scope
from clients.selectors import secret_expiry

NAME_MAX = 255
LIST_MAX = 100
JWK_MAX_MEMBERS = 32
# Room to list more than the services allow, so their limits give the message.
CREDENTIALS_LIST_MAX = 50


class SecretSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    display = serializers.CharField()
    state = serializers.ChoiceField(choices=["active", "expiring", "expired", "revoked"])
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)


def secret_representation(secret: ClientSecret, *, machine: Machine, now) -> dict:
    expires_at = secret_expiry(secret=secret, machine=machine)
    if secret.revoked_at is not None:
        state = "revoked"
    elif expires_at is not None and expires_at <= now:
        state = "expired"
    elif secret.expires_at is not None:
        state = "expiring"
    else:
        state = "active"
    return {
        "id": secret.pk,
        "display": str(secret),
        "state": state,
        "created_at": secret.created_at,
        "expires_at": expires_at,
        "revoked_at": secret.revoked_at,
        "last_used_at": secret.last_used_at,
    }


class MachineSerializer(serializers.Serializer):
    client_id = serializers.CharField()
    subject = serializers.UUIDField()
    name = serializers.CharField()
    description = serializers.CharField(allow_blank=True)
    owner_team = serializers.CharField(allow_blank=True)
    owner_email = serializers.CharField(allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField())
    enabled = serializers.BooleanField()
    deleted = serializers.BooleanField()
    scopes = serializers.ListField(child=serializers.CharField())
    default_scopes = serializers.ListField(child=serializers.CharField())
    audiences = serializers.ListField(child=serializers.CharField())
    default_audience = serializers.CharField(allow_null=True)
    access_token_ttl = serializers.IntegerField()
    max_secret_age = serializers.IntegerField(allow_null=True)
    rotation_grace = serializers.IntegerField()
    ip_allowlist = serializers.ListField(child=serializers.CharField())
    auth_methods = serializers.ListField(
        child=serializers.CharField(), help_text="Client authentication methods it may use."
    )
    created = serializers.DateTimeField()
    updated = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    secrets = SecretSerializer(many=True)


def machine_representation(machine: Machine, *, now) -> dict:
    return {
        "client_id": machine.client_id,
        "subject": str(machine.subject),
        "name": machine.name,
        "description": machine.description,
        "owner_team": machine.owner_team,
        "owner_email": machine.owner_email,
        "tags": list(machine.tags),
        "enabled": machine.enabled,
        "deleted": machine.deleted_at is not None,
        "scopes": sorted(scope.name for scope in machine.allowed_scopes.all()),
        "default_scopes": sorted(scope.name for scope in machine.default_scopes.all()),
        "audiences": sorted(audience.uri for audience in machine.allowed_audiences.all()),
        "default_audience": machine.default_audience.uri if machine.default_audience else None,
        "access_token_ttl": machine.access_token_ttl,
        "max_secret_age": machine.max_secret_age,
        "rotation_grace": machine.rotation_grace,
        "ip_allowlist": list(machine.ip_allowlist),
        "auth_methods": sorted(machine.auth_methods),
        "created": machine.created,
        "updated": machine.updated,
        "last_used_at": machine.last_used_at,
        "secrets": [
            secret_representation(secret, machine=machine, now=now)
            for secret in machine.secrets.all()
        ],
    }


def _strings(max_length: int, **kwargs) -> serializers.ListField:
    return serializers.ListField(
        child=serializers.CharField(max_length=max_length, allow_blank=False),
        max_length=LIST_MAX,
        **kwargs,
    )


class MachineWriteSerializer(serializers.Serializer):
    """Fields a caller may set; on create ``name`` is required, on update every field optional."""

    name = serializers.CharField(max_length=NAME_MAX)
    description = serializers.CharField(max_length=2000, allow_blank=True, required=False)
    owner_team = serializers.CharField(max_length=NAME_MAX, allow_blank=True, required=False)
    owner_email = serializers.CharField(max_length=254, allow_blank=True, required=False)
    tags = _strings(64, required=False)
    scopes = _strings(64, required=False)
    default_scopes = _strings(64, required=False)
    audiences = _strings(255, required=False)
    default_audience = serializers.CharField(
        max_length=255, allow_null=True, allow_blank=True, required=False
    )
    access_token_ttl = serializers.IntegerField(
        min_value=1, max_value=settings.ACCESS_TOKEN_MAX_TTL, required=False
    )
    max_secret_age = serializers.IntegerField(min_value=1, allow_null=True, required=False)
    rotation_grace = serializers.IntegerField(min_value=0, max_value=2**31 - 1, required=False)
    ip_allowlist = _strings(64, required=False)
    auth_methods = _strings(
        64,
        required=False,
        min_length=1,
        help_text="Default: client_secret_basic and client_secret_post. A secret is made "
        "only when a secret method is allowed.",
    )


class MachineCreatedSerializer(MachineSerializer):
    client_secret = serializers.CharField(
        required=False,
        help_text="Shown in this answer only: store it now (the portal keeps only a digest). "
        "Absent when the machine may use no secret method.",
    )


class SecretRotateSerializer(serializers.Serializer):
    grace = serializers.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        required=False,
        help_text="Seconds the previous secret keeps working (default: the machine's policy).",
    )


class SecretCreatedSerializer(serializers.Serializer):
    client_id = serializers.CharField()
    client_secret = serializers.CharField(help_text="Shown in this answer only.")
    secret = SecretSerializer()


class ScopeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Scope
        fields = ["name", "description", "created_at"]
        read_only_fields = ["created_at"]
        extra_kwargs = {"name": {"validators": []}}  # the service checks uniqueness


class AudienceSerializer(serializers.ModelSerializer):
    class Meta:
        model = Audience
        fields = ["uri", "name", "description", "created_at"]
        read_only_fields = ["created_at"]
        extra_kwargs = {"uri": {"validators": []}}


class PublicJwkField(serializers.DictField):
    """One public JWK; only its size is checked here, the services decide the rest."""

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if len(value) > JWK_MAX_MEMBERS:
            raise serializers.ValidationError("Too many members for a JWK.")
        return value


class TrustAddSerializer(serializers.Serializer):
    issuer = serializers.CharField(max_length=255)
    audience = serializers.CharField(max_length=255)
    subject = serializers.CharField(max_length=255, allow_blank=True, required=False)
    condition = serializers.CharField(max_length=1024, allow_blank=True, required=False)
    jwks = serializers.DictField(required=False, help_text="The issuer's JWKS, pasted.")
    description = serializers.CharField(max_length=255, allow_blank=True, required=False)


class StrictSerializer(serializers.Serializer):
    """Refuses keys it does not know: in a document, a typo must not be silently ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["unknown field"] for name in unknown})
        return super().to_internal_value(data)


class ApplyScopeSerializer(StrictSerializer):
    name = serializers.CharField(max_length=64)
    description = serializers.CharField(max_length=2000, allow_blank=True, required=False)


class ApplyAudienceSerializer(StrictSerializer):
    uri = serializers.CharField(max_length=255)
    name = serializers.CharField(max_length=255, allow_blank=True, required=False)
    description = serializers.CharField(max_length=2000, allow_blank=True, required=False)


def _template_value(help_text: str) -> serializers.CharField:
    return serializers.CharField(max_length=200, required=False, help_text=help_text)


class ApplyTrustSerializer(StrictSerializer, TrustAddSerializer):
    """A trust as in ``POST .../trusts``, or made from a template and its values."""

    issuer = serializers.CharField(
        max_length=255, required=False, help_text="Required unless the template names it."
    )
    template = serializers.ChoiceField(choices=sorted(TEMPLATES), required=False)
    repository = _template_value("github: OWNER/REPO.")
    project_path = _template_value("gitlab: GROUP/PROJECT.")
    ref = _template_value("github: refs/heads/main; gitlab: main.")
    environment = _template_value("github, gitlab: the deployment environment.")
    namespace = _template_value("kubernetes: the service account's namespace.")
    service_account = _template_value("kubernetes: the service account's name.")


class ApplyMachineSerializer(StrictSerializer, MachineWriteSerializer):
    enabled = serializers.BooleanField(required=False)
    jwks_uri = serializers.CharField(
        max_length=2048,
        allow_blank=True,
        required=False,
        help_text="Where the machine publishes its private_key_jwt keys (blank: none).",
    )
    public_keys = serializers.ListField(
        child=PublicJwkField(),
        max_length=CREDENTIALS_LIST_MAX,
        required=False,
        help_text="Every public JWK the machine has for private_key_jwt (at most two): "
        "missing ones are added, unlisted ones removed. Absent: left as they are.",
    )
    trusts = ApplyTrustSerializer(
        many=True,
        max_length=CREDENTIALS_LIST_MAX,
        required=False,
        help_text="Every federation trust the machine has: missing ones are added, "
        "unlisted ones removed. Absent: left as they are.",
    )


class ApplyDocumentSerializer(StrictSerializer):
    """The document ``manage.py apply`` and ``POST /api/v1/apply`` take."""

    scopes = ApplyScopeSerializer(many=True, required=False, max_length=1000)
    audiences = ApplyAudienceSerializer(many=True, required=False, max_length=1000)
    machines = ApplyMachineSerializer(many=True, required=False, max_length=10000)


class ApplyRequestSerializer(StrictSerializer):
    document = ApplyDocumentSerializer()
    dry_run = serializers.BooleanField(default=False)
    prune = serializers.BooleanField(
        default=False, help_text="Disable live machines the document does not name."
    )


class PlanStepSerializer(serializers.Serializer):
    action = serializers.ChoiceField(
        choices=["create", "change", "enable", "disable", "unchanged", "add", "remove"]
    )
    kind = serializers.ChoiceField(choices=["scope", "audience", "machine", "key", "trust"])
    name = serializers.CharField(help_text="Keys and trusts: their machine's name.")
    fields = serializers.ListField(child=serializers.CharField())
    detail = serializers.DictField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="Keys: kid and thumbprint; trusts: issuer, audience, subject, condition.",
    )


class CreatedSecretSerializer(serializers.Serializer):
    client_id = serializers.CharField()
    client_secret = serializers.CharField()


class ApplyResultSerializer(serializers.Serializer):
    applied = serializers.BooleanField()
    changes = serializers.IntegerField()
    plan = PlanStepSerializer(many=True)
    secrets = serializers.DictField(
        child=CreatedSecretSerializer(),
        help_text="New machines' secrets by machine name, shown in this answer only.",
    )
