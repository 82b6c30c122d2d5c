"""Signing keys through the management API: list, rotate, revoke (``keys:write``).

Reading the list needs ``machines:read``, ``machines:write`` or ``keys:write`` or a console role;
rotating or revoking needs ``keys:write`` or the security admin role. Only
public metadata ever leaves: no private half, not even wrapped.
"""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response

from audit.context import request_context
from clients.api.conventions import ManagementApiView, caller_of, idempotent
from clients.api.permissions import KEYS_WRITE, MACHINES_READ, MACHINES_WRITE, ManagementAccess
from clients.api.views import ERRORS, IDEMPOTENCY_KEY, WRITE_ERRORS
from tokens.choices import KeyAlgorithm
from tokens.models import SigningKey
from tokens.selectors import signing_keys_list
from tokens.services import signing_key_create, signing_key_revoke


class SigningKeySerializer(serializers.Serializer):
    kid = serializers.CharField()
    algorithm = serializers.ChoiceField(choices=KeyAlgorithm.choices)
    state = serializers.CharField()
    kek_id = serializers.CharField()
    created_at = serializers.DateTimeField()
    activate_after = serializers.DateTimeField(allow_null=True)
    activated_at = serializers.DateTimeField(allow_null=True)
    retire_after = serializers.DateTimeField(allow_null=True)
    retired_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    problem = serializers.CharField(allow_null=True)


class KeyRotateSerializer(serializers.Serializer):
    algorithm = serializers.ChoiceField(choices=KeyAlgorithm.choices, required=False)
    activate_now = serializers.BooleanField(
        default=False,
        help_text=(
            "Sign with it at once instead of after KEY_PUBLISH_DELAY: resource servers "
            "that cached JWKS reject its tokens until they refetch."
        ),
    )


class _KeysView(ManagementApiView):
    permission_classes = [ManagementAccess]
    read_scopes = (MACHINES_READ, MACHINES_WRITE, KEYS_WRITE)
    write_scope = KEYS_WRITE


class SigningKeyListView(_KeysView):
    @extend_schema(
        operation_id="keys_list", responses={200: SigningKeySerializer(many=True), **ERRORS}
    )
    def get(self, request):
        return Response(signing_keys_list())


class SigningKeyRotateView(_KeysView):
    @extend_schema(
        operation_id="keys_rotate",
        request=KeyRotateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: SigningKeySerializer, **WRITE_ERRORS},
        description="A new key, published now and signing after KEY_PUBLISH_DELAY.",
    )
    def post(self, request):
        caller = caller_of(request)

        def perform():
            data = KeyRotateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            key = signing_key_create(
                algorithm=data.validated_data.get("algorithm") or settings.TOKEN_SIGNING_ALGORITHM,
                activate_now=data.validated_data["activate_now"],
                actor=caller.actor,
                context=request_context(request),
            )
            return Response(_key(key.kid), status=status.HTTP_201_CREATED)

        return idempotent(request, caller, perform)


class SigningKeyRevokeView(_KeysView):
    @extend_schema(
        operation_id="keys_revoke",
        request=None,
        responses={200: SigningKeySerializer, **WRITE_ERRORS},
        description=(
            "Withdraw at once: out of JWKS, its tokens inactive at introspection; revoking "
            "the active key puts a fresh one in its place."
        ),
    )
    def post(self, request, kid: str):
        caller = caller_of(request)
        try:
            key = signing_key_revoke(kid=kid, actor=caller.actor, context=request_context(request))
        except SigningKey.DoesNotExist:
            raise NotFound("No signing key has this kid.") from None
        return Response(_key(key.kid))


def _key(kid: str) -> dict:
    return next(item for item in signing_keys_list() if item["kid"] == kid)
