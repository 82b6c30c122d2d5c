"""The console's federation trusts: security admins add and remove them, auditors look.

A trust is never edited in place: what it admits is bound to its fields
(``clients.federation.binding``), so a change is a removal and an addition,
each audited. Removing goes through ``trust_remove`` (the delete button).
"""

from __future__ import annotations

from django.contrib import admin

from clients.admin import RoleGatedAdmin, _actor_and_context
from clients.federation.forms import TrustForm
from clients.federation.selectors import trust_is_authentic
from clients.federation.services import trust_add, trust_remove
from clients.models import FederationTrust
from core.roles import is_security_admin


@admin.register(FederationTrust)
class FederationTrustAdmin(RoleGatedAdmin):
    form = TrustForm
    list_display = ("machine", "issuer", "audience", "subject", "template", "authentic")
    list_filter = ("template",)
    search_fields = ("machine__name", "machine__client_id", "issuer", "subject", "audience")
    list_select_related = ("machine",)
    readonly_fields = (
        "uid",
        "machine",
        "issuer",
        "audience",
        "subject",
        "condition",
        "pasted_jwks",
        "template",
        "description",
        "created_at",
        "created_by",
        "authentic",
    )
    add_fieldsets = (
        (None, {"fields": ("machine", "template", "audience", "description")}),
        (
            "Template values",
            {
                "fields": (
                    "repository",
                    "project_path",
                    "ref",
                    "environment",
                    "namespace",
                    "service_account",
                )
            },
        ),
        ("By hand (or to override the template)", {"fields": ("issuer", "subject", "condition")}),
        ("Keys of an unreachable issuer", {"fields": ("jwks",)}),
    )

    @admin.display(boolean=True, description="authentic")
    def authentic(self, obj: FederationTrust) -> bool:
        # A row written outside the portal fails its binding and admits nothing.
        return trust_is_authentic(obj)

    @admin.display(boolean=True, description="pasted JWKS")
    def pasted_jwks(self, obj: FederationTrust) -> bool:
        return bool(obj.jwks)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return self.add_fieldsets
        return ((None, {"fields": self.readonly_fields}),)

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.readonly_fields

    def has_change_permission(self, request, obj=None):
        # Bound to its fields: never edited, removed and added instead.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return is_security_admin(request.user)

    def save_model(self, request, obj, form, change):
        actor, context = _actor_and_context(request)
        trust = trust_add(actor=actor, context=context, **form.service_kwargs())
        for field in FederationTrust._meta.concrete_fields:
            setattr(obj, field.attname, getattr(trust, field.attname))
        obj._state.adding = False

    def delete_model(self, request, obj):
        actor, context = _actor_and_context(request)
        trust_remove(actor=actor, trust=obj, context=context)

    def delete_queryset(self, request, queryset):
        actor, context = _actor_and_context(request)
        for trust in queryset.select_related("machine"):
            trust_remove(actor=actor, trust=trust, context=context)
