"""A machine's secretless credentials through the management API: public keys and trusts.

Adding a key or a trust is giving someone a way to act as the machine, so the
caller must be allowed to change that machine (``machine_manageable_check``:
a calling machine's token must carry every scope the target holds), exactly
as for rotating its secret. Every change goes through the same services as
the console and the CLI, with its audit event.
"""

from __future__ import annotations

import uuid

from django.db import transaction
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from audit.context import request_context
from clients.api.conventions import ManagementApiView, caller_of
from clients.api.permissions import ManagementAccess
from clients.api.serializers import PublicJwkField, TrustAddSerializer
from clients.api.views import ERRORS, WRITE_ERRORS, _machine_for
from clients.federation.selectors import trust_is_authentic, trust_list
from clients.federation.services import trust_add, trust_remove
from clients.models import ClientKey, FederationTrust
from clients.services import client_key_add, client_key_remove


class ClientKeySerializer(serializers.Serializer):
    kid = serializers.CharField()
    thumbprint = serializers.CharField()
    kty = serializers.CharField()
    alg = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()


class ClientKeyAddSerializer(serializers.Serializer):
    jwk = PublicJwkField(
        help_text="One public JWK (EC P-256/P-384, Ed25519, RSA 2048+); a private part is refused."
    )


class TrustSerializer(serializers.Serializer):
    trust_id = serializers.UUIDField()
    issuer = serializers.CharField()
    audience = serializers.CharField()
    subject = serializers.CharField(allow_blank=True)
    condition = serializers.CharField(allow_blank=True)
    pasted_jwks = serializers.BooleanField()
    template = serializers.CharField(allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    authentic = serializers.BooleanField()
    created_at = serializers.DateTimeField()


def _key_json(key: ClientKey) -> dict:
    return {
        "kid": key.kid,
        "thumbprint": key.thumbprint,
        "kty": key.public_jwk.get("kty", ""),
        "alg": key.public_jwk.get("alg", ""),
        "created_at": key.created_at,
    }


def _trust_json(trust: FederationTrust) -> dict:
    return {
        "trust_id": str(trust.uid),
        "issuer": trust.issuer,
        "audience": trust.audience,
        "subject": trust.subject,
        "condition": trust.condition,
        "pasted_jwks": bool(trust.jwks),
        "template": trust.template,
        "description": trust.description,
        "authentic": trust_is_authentic(trust),
        "created_at": trust.created_at,
    }


class ClientKeyListView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_keys_list",
        responses={200: ClientKeySerializer(many=True), **ERRORS},
    )
    def get(self, request, client_id: str):
        machine = _machine_for(request, client_id)
        return Response([_key_json(key) for key in machine.keys.all()])

    @extend_schema(
        operation_id="machines_keys_add",
        request=ClientKeyAddSerializer,
        responses={201: ClientKeySerializer, **WRITE_ERRORS},
        description="Register a public key for private_key_jwt (at most two per machine).",
    )
    def post(self, request, client_id: str):
        caller = caller_of(request)
        data = ClientKeyAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            machine = _machine_for(request, client_id, for_update=True)
            key = client_key_add(
                actor=caller.actor,
                machine=machine,
                jwk=data.validated_data["jwk"],
                context=request_context(request),
            )
        return Response(_key_json(key), status=status.HTTP_201_CREATED)


class ClientKeyDetailView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_keys_remove", request=None, responses={204: None, **WRITE_ERRORS}
    )
    def delete(self, request, client_id: str, kid: str):
        caller = caller_of(request)
        with transaction.atomic():
            machine = _machine_for(request, client_id, for_update=True)
            try:
                client_key_remove(
                    actor=caller.actor, machine=machine, kid=kid, context=request_context(request)
                )
            except ClientKey.DoesNotExist:
                raise NotFound("The machine has no key with this kid.") from None
        return Response(status=status.HTTP_204_NO_CONTENT)


class TrustListView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_trusts_list", responses={200: TrustSerializer(many=True), **ERRORS}
    )
    def get(self, request, client_id: str):
        machine = _machine_for(request, client_id)
        return Response([_trust_json(trust) for trust in trust_list(machine=machine)])

    @extend_schema(
        operation_id="machines_trusts_add",
        request=TrustAddSerializer,
        responses={201: TrustSerializer, **WRITE_ERRORS},
        description=(
            "Let external tokens of `issuer` (GitHub Actions, Kubernetes, any OIDC issuer) "
            "that carry `audience` and match `subject` and/or the CEL `condition` act as "
            "this machine (federated_jwt)."
        ),
    )
    def post(self, request, client_id: str):
        caller = caller_of(request)
        data = TrustAddSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        with transaction.atomic():
            machine = _machine_for(request, client_id, for_update=True)
            trust = trust_add(
                actor=caller.actor,
                machine=machine,
                context=request_context(request),
                **data.validated_data,
            )
        return Response(_trust_json(trust), status=status.HTTP_201_CREATED)


class TrustDetailView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_trusts_remove", request=None, responses={204: None, **WRITE_ERRORS}
    )
    def delete(self, request, client_id: str, trust_id: str):
        caller = caller_of(request)
        with transaction.atomic():
            machine = _machine_for(request, client_id, for_update=True)
            trust = trust_list(machine=machine).filter(uid__in=_uuid_or_none(trust_id)).first()
            if trust is None:
                raise NotFound("The machine has no trust with this id.")
            trust_remove(actor=caller.actor, trust=trust, context=request_context(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _uuid_or_none(value: str) -> list[str]:
    try:
        return [str(uuid.UUID(value))]
    except ValueError:
        return []
