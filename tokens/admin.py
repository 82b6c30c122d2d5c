"""The console page for signing keys: read-only rows, lifecycle actions through services.

No private material is ever rendered: the wrapped private key is not a field
of the page. Security admins may rotate and revoke; auditors only look. The
``problem`` column says why the keyring distrusts a row (tokens.keyring): the
stored ``public_jwk`` shown here is only a copy, never what is published.
"""

from __future__ import annotations

from django.contrib import admin, messages

from audit.context import Actor, request_context
from clients.cache_outcome import cache_failures_collected
from core.admin import RoleGatedAdminMixin
from tokens.keyring import keyring_current
from tokens.models import SigningKey
from tokens.services import signing_key_create, signing_key_revoke

_PUBLIC_FIELDS = (
    "kid",
    "algorithm",
    "state",
    "kek_id",
    "created_at",
    "activate_after",
    "activated_at",
    "retiring_at",
    "retire_after",
    "retired_at",
    "revoked_at",
    "problem",
    "public_jwk",
)


@admin.register(SigningKey)
class SigningKeyAdmin(RoleGatedAdminMixin, admin.ModelAdmin):
    list_display = (
        "kid",
        "algorithm",
        "state",
        "problem",
        "created_at",
        "activate_after",
        "retire_after",
    )
    list_filter = ("state", "algorithm")
    fields = _PUBLIC_FIELDS
    readonly_fields = _PUBLIC_FIELDS
    actions = ["rotate_algorithm", "revoke_keys"]

    @admin.display(description="problem")
    def problem(self, obj: SigningKey) -> str:
        for problem in keyring_current().problems:
            if problem.kid == obj.kid:
                return problem.reason
        return "-"

    # Rows change only through the lifecycle actions (security admins, services).
    security_admins_change = False

    @admin.action(
        description="Rotate: publish a new key of the same algorithm (signs after the delay)",
        permissions=["security_admin"],
    )
    def rotate_algorithm(self, request, queryset):
        actor, context = Actor.user(request.user), request_context(request)
        with cache_failures_collected() as failures:
            for algorithm in sorted(set(queryset.values_list("algorithm", flat=True))):
                key = signing_key_create(algorithm=algorithm, actor=actor, context=context)
                self.message_user(request, f"Published {algorithm} key {key.kid} (pending).")
        for message in failures:
            self.message_user(request, message, level=messages.ERROR)

    @admin.action(
        description="Revoke at once (emergency): out of JWKS, its tokens inactive",
        permissions=["security_admin"],
    )
    def revoke_keys(self, request, queryset):
        actor, context = Actor.user(request.user), request_context(request)
        with cache_failures_collected() as failures:
            for kid in queryset.values_list("kid", flat=True):
                signing_key_revoke(kid=kid, actor=actor, context=context)
                self.message_user(request, f"Revoked key {kid}.", level=messages.WARNING)
        for message in failures:
            self.message_user(request, message, level=messages.ERROR)
