"""The audit API: SIEM pull of sealed events, and signed exports for auditors.

``GET /api/v1/audit/events`` pages sealed events by chain position;
``POST /api/v1/audit/export`` (``format=jsonl|csv`` and the filters in the form
body) returns a zip of the export and its signed manifest, the same files
``manage.py audit_export`` writes. Both take the same filters. The export is a
POST because it writes (a checkpoint and an ``audit.exported`` event): a GET
would let a cross-site link start one from an auditor's browser, while a POST
from a session must carry the CSRF token. Neither response may be cached.
"""

from __future__ import annotations

from django.conf import settings
from django.http import FileResponse, QueryDict
from django.utils.module_loading import import_string
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.pagination import CursorPagination
from rest_framework.views import APIView

from audit.api.permissions import CanReadAudit
from audit.api.serializers import AuditEventSerializer, AuditFilterSerializer
from audit.choices import ActorKind
from audit.context import Actor, request_context
from audit.selectors import AuditFilters, audit_events_filter
from audit.services import EXPORT_FORMATS, audit_export_bundle


def _filters_from_query(query_params, *, ignore: tuple[str, ...]) -> AuditFilters:
    params = {key: query_params.get(key) for key in query_params if key not in ignore}
    params.pop("type", None)
    if query_params.getlist("type"):
        params["type"] = query_params.getlist("type")
    unknown = set(params) - set(AuditFilterSerializer().fields)
    if unknown:
        raise ValidationError({name: "unknown filter" for name in sorted(unknown)})
    query = AuditFilterSerializer(data=params)
    query.is_valid(raise_exception=True)
    return query.filters()


def _form_params(data) -> QueryDict:
    """The export's parameters from a form body, or from a JSON object of strings."""
    if isinstance(data, QueryDict):
        return data
    if not isinstance(data, dict):
        raise ValidationError({"non_field_errors": ["send the parameters as a form or object"]})
    params = QueryDict(mutable=True)
    for key, value in data.items():
        values = value if isinstance(value, list) else [value]
        if not all(isinstance(item, str) for item in values):
            raise ValidationError({key: ["must be a string or a list of strings"]})
        params.setlist(key, values)
    return params


class AuditApiMixin:
    permission_classes = [CanReadAudit]

    def finalize_response(self, request, response, *args, **kwargs):
        # Audit records (and refusals) must not linger in browser or proxy caches.
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        return response

    def get_authenticators(self):
        # Read per request so the deployment (and the merge) chooses the classes.
        return [import_string(path)() for path in settings.AUDIT_API_AUTHENTICATION_CLASSES]


class PositionCursorPagination(CursorPagination):
    # Positions are unique and only ever appended: a cursor never skips or repeats.
    ordering = "position"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class AuditEventListView(AuditApiMixin, ListAPIView):
    serializer_class = AuditEventSerializer
    pagination_class = PositionCursorPagination

    def get_queryset(self):
        filters = _filters_from_query(self.request.query_params, ignore=("cursor", "page_size"))
        return audit_events_filter(filters=filters)


class AuditExportRequestSerializer(AuditFilterSerializer):
    format = serializers.ChoiceField(choices=EXPORT_FORMATS)


class AuditExportView(AuditApiMixin, APIView):
    def perform_content_negotiation(self, request, force=False):
        # format= names the export's file format here, not a DRF renderer.
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        operation_id="audit_export",
        request={
            "application/x-www-form-urlencoded": AuditExportRequestSerializer,
            "application/json": AuditExportRequestSerializer,
        },
        responses={
            (200, "application/zip"): OpenApiResponse(
                OpenApiTypes.BINARY, description="The export and its signed manifest."
            )
        },
    )
    def post(self, request):
        if request.query_params:
            # Refused rather than ignored: a filter left in the URL must not
            # silently widen the export to everything.
            raise ValidationError({"non_field_errors": ["send the parameters in the body"]})
        params = _form_params(request.data)
        fmt = params.get("format", "")
        if fmt not in EXPORT_FORMATS:
            raise ValidationError({"format": f"one of {', '.join(EXPORT_FORMATS)}"})
        filters = _filters_from_query(params, ignore=("format",))
        handle, filename = audit_export_bundle(
            fmt=fmt, filters=filters, actor=_actor(request), context=request_context(request)
        )
        return FileResponse(
            handle, as_attachment=True, filename=filename, content_type="application/zip"
        )


def _actor(request) -> Actor:
    if isinstance(request.auth, dict):
        subject = str(request.auth.get("client_id") or request.auth.get("sub") or "")
        return Actor(kind=ActorKind.MACHINE, id=subject, display=subject)
    return Actor.user(request.user)
