"""The audit trail in the console: readable by auditors and security admins, changeable by nobody.

Add, change and delete are refused for every user, superusers included; the
ORM and the PostgreSQL trigger refuse them below this too.
"""

from __future__ import annotations

from django.contrib import admin

from audit.models import AuditCheckpoint, AuditEvent
from core.admin import RoleGatedAdminMixin


class ReadOnlyAuditAdmin(RoleGatedAdminMixin, admin.ModelAdmin):
    actions = None
    security_admins_change = False


class SealFilter(admin.SimpleListFilter):
    title = "seal"
    parameter_name = "sealed"

    def lookups(self, request, model_admin):
        return [("yes", "sealed"), ("no", "unsealed")]

    def queryset(self, request, queryset):
        if self.value() in ("yes", "no"):
            return queryset.filter(seal__isnull=self.value() == "no")
        return queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAuditAdmin):
    list_display = (
        "occurred_at",
        "event_type",
        "actor_kind",
        "actor_display",
        "target_kind",
        "target_display",
        "outcome",
        "reason",
        "source_ip",
        "seal",
    )
    list_filter = ("event_type", "outcome", "actor_kind", SealFilter)
    search_fields = ("actor_id", "actor_display", "target_id", "target_display", "request_id")
    date_hierarchy = "occurred_at"
    ordering = ("-id",)
    show_full_result_count = False

    def get_queryset(self, request):
        # The chain position lives in the event's seal row: one LEFT JOIN, not a query per row.
        return super().get_queryset(request).select_related("seal")

    @admin.display(description="position")
    def seal(self, obj: AuditEvent) -> str:
        seal = getattr(obj, "seal", None)
        return str(seal.position) if seal is not None else "unsealed"


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAuditAdmin):
    list_display = ("created_at", "kind", "position", "head_hash", "anchor_position", "key_id")
    list_filter = ("kind",)
    ordering = ("-id",)
