"""``GET /api/v1/audit/events``: SIEM pull of sealed events, cursor-paginated by position."""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string
from rest_framework.exceptions import ValidationError
from rest_framework.generics import ListAPIView
from rest_framework.pagination import CursorPagination

from audit.api.permissions import CanReadAudit
from audit.api.serializers import AuditEventSerializer, AuditFilterSerializer
from audit.selectors import audit_events_filter


class PositionCursorPagination(CursorPagination):
    # Positions are unique and only ever appended: a cursor never skips or repeats.
    ordering = "position"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class AuditEventListView(ListAPIView):
    serializer_class = AuditEventSerializer
    pagination_class = PositionCursorPagination
    permission_classes = [CanReadAudit]

    def get_authenticators(self):
        # Read per request so the deployment (and the merge) chooses the classes.
        return [import_string(path)() for path in settings.AUDIT_API_AUTHENTICATION_CLASSES]

    def get_queryset(self):
        params = {key: self.request.query_params.get(key) for key in self.request.query_params}
        params["type"] = self.request.query_params.getlist("type")
        params.pop("cursor", None)
        params.pop("page_size", None)
        if not params["type"]:
            params.pop("type")
        unknown = set(params) - set(AuditFilterSerializer().fields)
        if unknown:
            raise ValidationError({name: "unknown filter" for name in sorted(unknown)})
        query = AuditFilterSerializer(data=params)
        query.is_valid(raise_exception=True)
        return audit_events_filter(filters=query.filters())
