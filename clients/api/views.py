"""The management API for machines, their secrets, scopes and audiences (``/api/v1/``).

Thin views: check the caller (``permissions``), the shape of the input
(``serializers``), then call the same services as the console and the CLI, each
one transaction with its audit event, whose actor is the calling machine or
user.
"""

from __future__ import annotations

from django.db import transaction
from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination
from rest_framework.response import Response

from audit.context import request_context
from clients import services
from clients.api.conventions import (
    IDEMPOTENCY_KEY_PATTERN,
    ManagementApiView,
    caller_of,
    etag_of,
    idempotent,
    if_match_check,
)
from clients.api.permissions import (
    ManagementAccess,
    machine_manageable_check,
    scopes_grantable_check,
)
from clients.api.serializers import (
    ApplyRequestSerializer,
    ApplyResultSerializer,
    AudienceSerializer,
    MachineCreatedSerializer,
    MachineSerializer,
    MachineWriteSerializer,
    ScopeSerializer,
    SecretCreatedSerializer,
    SecretRotateSerializer,
    machine_representation,
    secret_representation,
)
from clients.declarative import registry_apply, registry_plan
from clients.models import ClientSecret, Machine
from clients.selectors import audience_list, machine_filter, machine_list, scope_list

PROBLEM = OpenApiResponse(description="An RFC 9457 problem document (application/problem+json).")
ERRORS = {status_code: PROBLEM for status_code in (400, 401, 403, 404, 406, 429)}
WRITE_ERRORS = {**ERRORS, 409: PROBLEM, 412: PROBLEM, 415: PROBLEM, 422: PROBLEM}
IF_MATCH = OpenApiParameter(
    "If-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="The ETag you read: the change is refused with 412 if the machine changed since.",
)
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    pattern=IDEMPOTENCY_KEY_PATTERN,
    description="A retry with the same key gets the first answer back (secrets withheld).",
)


class MachinePagination(CursorPagination):
    # Ids only grow: a cursor never skips or repeats a machine while others are added.
    ordering = "id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500


def _machine_for(request, client_id: str, *, for_update: bool = False) -> Machine:
    machine = get_object_or_404(machine_list(include_deleted=True), client_id=client_id)
    if for_update:
        machine_manageable_check(caller_of(request), machine)
    return machine


def _represented(machine: Machine) -> dict:
    fresh = machine_filter(include_deleted=True).get(pk=machine.pk)
    return machine_representation(fresh, now=timezone.now())


class MachinePageSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next page, or null at the end.")
    previous = serializers.URLField(allow_null=True)
    results = MachineSerializer(many=True)


class MachineFilterSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False, allow_null=True, default=None)
    # Blank means "no filter", as a form submitting an empty field means.
    owner_team = serializers.CharField(max_length=255, required=False, allow_blank=True)
    scope = serializers.CharField(max_length=64, required=False, allow_blank=True)
    audience = serializers.CharField(max_length=255, required=False, allow_blank=True)
    search = serializers.CharField(max_length=255, required=False, allow_blank=True)
    include_deleted = serializers.BooleanField(required=False, default=False)


class MachineListView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_list",
        parameters=[MachineFilterSerializer],
        responses={200: MachinePageSerializer, **ERRORS},
    )
    def get(self, request):
        known = {*MachineFilterSerializer().fields, "cursor", "page_size"}
        unknown = sorted(set(request.query_params) - known)
        if unknown:
            raise ValidationError({name: ["unknown filter"] for name in unknown})
        query = MachineFilterSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        machines = machine_filter(**query.validated_data)
        paginator = MachinePagination()
        page = paginator.paginate_queryset(machines, request, view=self)
        now = timezone.now()
        return paginator.get_paginated_response(
            [machine_representation(machine, now=now) for machine in page]
        )

    @extend_schema(
        operation_id="machines_create",
        request=MachineWriteSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: MachineCreatedSerializer, **WRITE_ERRORS},
    )
    def post(self, request):
        caller = caller_of(request)

        def perform():
            data = MachineWriteSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            fields = data.validated_data
            scopes_grantable_check(caller, fields.get("scopes", ()))
            with transaction.atomic():
                machine, raw = services.machine_register(
                    actor=caller.actor, context=request_context(request), **fields
                )
            body = _represented(machine)
            if raw is not None:
                body["client_secret"] = raw
            return Response(body, status=status.HTTP_201_CREATED)

        return idempotent(request, caller, perform)


class MachineDetailView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(operation_id="machines_read", responses={200: MachineSerializer, **ERRORS})
    def get(self, request, client_id: str):
        body = _represented(_machine_for(request, client_id))
        return Response(body, headers={"ETag": etag_of(body)})

    @extend_schema(
        operation_id="machines_update",
        request=MachineWriteSerializer(partial=True),
        parameters=[IF_MATCH],
        responses={200: MachineSerializer, **WRITE_ERRORS},
    )
    def patch(self, request, client_id: str):
        caller = caller_of(request)
        data = MachineWriteSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        fields = data.validated_data
        with transaction.atomic():
            machine = _machine_for(request, client_id, for_update=True)
            machine = Machine.objects.select_for_update().get(pk=machine.pk)
            if_match_check(request, etag_of(_represented(machine)))
            scopes_grantable_check(caller, fields.get("scopes", ()))
            services.machine_update(
                actor=caller.actor, machine=machine, context=request_context(request), **fields
            )
        body = _represented(machine)
        return Response(body, headers={"ETag": etag_of(body)})

    @extend_schema(
        operation_id="machines_delete",
        parameters=[IF_MATCH],
        responses={204: None, **WRITE_ERRORS},
    )
    def delete(self, request, client_id: str):
        caller = caller_of(request)
        with transaction.atomic():
            machine = _machine_for(request, client_id, for_update=True)
            if_match_check(request, etag_of(_represented(machine)))
            services.machine_delete(
                actor=caller.actor, machine=machine, context=request_context(request)
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


def _machine_state_change(request, client_id: str, service) -> Response:
    caller = caller_of(request)
    with transaction.atomic():
        machine = _machine_for(request, client_id, for_update=True)
        if_match_check(request, etag_of(_represented(machine)))
        service(actor=caller.actor, machine=machine, context=request_context(request))
    body = _represented(machine)
    return Response(body, headers={"ETag": etag_of(body)})


class MachineDisableView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_disable",
        request=None,
        parameters=[IF_MATCH],
        responses={200: MachineSerializer, **WRITE_ERRORS},
        description="Refuse the machine new tokens at once; its secrets stay (enable undoes it).",
    )
    def post(self, request, client_id: str):
        return _machine_state_change(request, client_id, services.machine_disable)


class MachineEnableView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_enable",
        request=None,
        parameters=[IF_MATCH],
        responses={200: MachineSerializer, **WRITE_ERRORS},
    )
    def post(self, request, client_id: str):
        return _machine_state_change(request, client_id, services.machine_enable)


class SecretListView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_secrets_rotate",
        request=SecretRotateSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: SecretCreatedSerializer, **WRITE_ERRORS},
        description=(
            "A new secret, usable at once and shown in this answer only; the previous "
            "one keeps working for `grace` seconds."
        ),
    )
    def post(self, request, client_id: str):
        caller = caller_of(request)

        def perform():
            data = SecretRotateSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            with transaction.atomic():
                machine = _machine_for(request, client_id, for_update=True)
                secret, raw = services.secret_rotate(
                    actor=caller.actor,
                    machine=machine,
                    grace=data.validated_data.get("grace"),
                    context=request_context(request),
                )
            body = {
                "client_id": machine.client_id,
                "client_secret": raw,
                "secret": secret_representation(secret, machine=machine, now=timezone.now()),
            }
            return Response(body, status=status.HTTP_201_CREATED)

        return idempotent(request, caller, perform)


class SecretDetailView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="machines_secrets_revoke",
        request=None,
        responses={204: None, **WRITE_ERRORS},
        description="Revoke now, without grace: the answer to a leaked secret.",
    )
    def delete(self, request, client_id: str, secret_id: int):
        caller = caller_of(request)
        with transaction.atomic():
            machine = _machine_for(request, client_id, for_update=True)
            secret = get_object_or_404(ClientSecret, pk=secret_id, machine=machine)
            services.secret_revoke(
                actor=caller.actor, secret=secret, context=request_context(request)
            )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ScopeListView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="scopes_list", responses={200: ScopeSerializer(many=True), **ERRORS}
    )
    def get(self, request):
        return Response(ScopeSerializer(scope_list(), many=True).data)

    @extend_schema(
        operation_id="scopes_create",
        request=ScopeSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: ScopeSerializer, **WRITE_ERRORS},
    )
    def post(self, request):
        caller = caller_of(request)

        def perform():
            data = ScopeSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            scope = services.scope_create(
                actor=caller.actor,
                name=data.validated_data["name"],
                description=data.validated_data.get("description", ""),
                context=request_context(request),
            )
            return Response(ScopeSerializer(scope).data, status=status.HTTP_201_CREATED)

        return idempotent(request, caller, perform)


class AudienceListView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="audiences_list", responses={200: AudienceSerializer(many=True), **ERRORS}
    )
    def get(self, request):
        return Response(AudienceSerializer(audience_list(), many=True).data)

    @extend_schema(
        operation_id="audiences_create",
        request=AudienceSerializer,
        parameters=[IDEMPOTENCY_KEY],
        responses={201: AudienceSerializer, **WRITE_ERRORS},
    )
    def post(self, request):
        caller = caller_of(request)

        def perform():
            data = AudienceSerializer(data=request.data)
            data.is_valid(raise_exception=True)
            audience = services.audience_create(
                actor=caller.actor,
                uri=data.validated_data["uri"],
                name=data.validated_data.get("name", ""),
                description=data.validated_data.get("description", ""),
                context=request_context(request),
            )
            return Response(AudienceSerializer(audience).data, status=status.HTTP_201_CREATED)

        return idempotent(request, caller, perform)


class ApplyView(ManagementApiView):
    permission_classes = [ManagementAccess]

    @extend_schema(
        operation_id="apply",
        request=ApplyRequestSerializer,
        responses={200: ApplyResultSerializer, **WRITE_ERRORS},
        description=(
            "Make scopes, audiences and machines (with their public keys and trusts) match "
            "the document (the same as `manage.py apply`): one transaction, one audit event "
            "per change; with `dry_run` only the plan. Adding a key or trust to a machine "
            "needs what the keys and trusts endpoints need. New machines' secrets are in "
            "this answer only."
        ),
    )
    def post(self, request):
        caller = caller_of(request)
        data = ApplyRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        document = data.validated_data["document"]
        prune = data.validated_data["prune"]
        for entry in document.get("machines", []):
            scopes_grantable_check(caller, entry.get("scopes", ()))
        if data.validated_data["dry_run"]:
            plan, secrets = registry_plan(document=document, prune=prune), {}
        else:
            applied = registry_apply(
                document=document,
                actor=caller.actor,
                prune=prune,
                context=request_context(request),
                may_change=lambda machine: machine_manageable_check(caller, machine),
            )
            plan, secrets = applied.plan, applied.secrets
        body = {
            "applied": not data.validated_data["dry_run"],
            "changes": plan.changes,
            "plan": [step.as_dict() for step in plan.steps],
            "secrets": secrets,
        }
        return Response(body)
