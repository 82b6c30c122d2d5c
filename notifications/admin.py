"""Console pages of notifications: webhook endpoints, and every delivery with its attempts.

Thin: the services write and audit. An endpoint's signing secret is shown
once, on a page rendered for that response only (``Cache-Control: no-store``).
Security admins add, change, test and rotate endpoints; auditors look.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.cache import add_never_cache_headers, patch_cache_control

from audit.context import Actor, request_context
from core.admin import RoleGatedAdminMixin
from core.roles import is_security_admin
from notifications.forms import WebhookEndpointForm
from notifications.models import Delivery, DeliveryAttempt, WebhookEndpoint
from notifications.services import (
    webhook_endpoint_create,
    webhook_endpoint_delete,
    webhook_endpoint_secret_rotate,
    webhook_endpoint_test,
    webhook_endpoint_update,
)


def _secret_page(admin_site, request, endpoint: WebhookEndpoint, secret: str):
    response = TemplateResponse(
        request,
        "notifications/webhook_secret_once.html",
        {
            **admin_site.each_context(request),
            "title": "Webhook signing secret",
            "endpoint": endpoint,
            "secret": secret,
            "change_url": reverse("admin:notifications_webhookendpoint_change", args=[endpoint.pk]),
        },
    )
    add_never_cache_headers(response)
    patch_cache_control(response, no_store=True, private=True)
    return response


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(RoleGatedAdminMixin, admin.ModelAdmin):
    form = WebhookEndpointForm
    list_display = ("team", "url", "enabled", "secret_hint", "created_at")
    list_filter = ("enabled", "team")
    search_fields = ("team", "url", "description")
    actions = ["send_test", "rotate_secret"]

    @admin.display(description="secret")
    def secret_hint(self, obj: WebhookEndpoint) -> str:
        return f"…{obj.secret_last_four}"

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("team", "uid", "secret_hint", "created_at", "created_by")

    def has_delete_permission(self, request, obj=None) -> bool:
        return is_security_admin(request.user)

    def save_model(self, request, obj, form, change):
        actor, context = Actor.user(request.user), request_context(request)
        data = form.cleaned_data
        if change:
            updated = webhook_endpoint_update(
                actor=actor,
                endpoint=obj,
                url=data["url"],
                enabled=data["enabled"],
                description=data["description"],
                context=context,
            )
            obj.__dict__.update(updated.__dict__)
            return
        endpoint, secret = webhook_endpoint_create(
            actor=actor,
            team=data["team"],
            url=data["url"],
            description=data["description"],
            context=context,
        )
        obj.pk, obj.uid = endpoint.pk, endpoint.uid
        request._webhook_secret = (endpoint, secret)

    def save_related(self, request, form, formsets, change):
        """No relations to save."""

    def response_add(self, request, obj, post_url_continue=None):
        endpoint, secret = request._webhook_secret
        return _secret_page(self.admin_site, request, endpoint, secret)

    def delete_model(self, request, obj):
        webhook_endpoint_delete(
            actor=Actor.user(request.user), endpoint=obj, context=request_context(request)
        )

    def delete_queryset(self, request, queryset):
        for endpoint in queryset:
            self.delete_model(request, endpoint)

    @admin.action(description="Send a test delivery", permissions=["security_admin"])
    def send_test(self, request, queryset):
        for endpoint in queryset:
            webhook_endpoint_test(actor=Actor.user(request.user), endpoint=endpoint)
        self.message_user(
            request,
            f"Test delivery queued to {queryset.count()} endpoint(s): see Deliveries.",
            messages.SUCCESS,
        )

    @admin.action(description="Rotate the signing secret", permissions=["security_admin"])
    def rotate_secret(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "Rotate one endpoint at a time.", messages.ERROR)
            return None
        endpoint, secret = webhook_endpoint_secret_rotate(
            actor=Actor.user(request.user),
            endpoint=queryset.get(),
            context=request_context(request),
        )
        return _secret_page(self.admin_site, request, endpoint, secret)


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = ("attempted_at", "succeeded", "status_code", "error", "duration_ms")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(RoleGatedAdminMixin, admin.ModelAdmin):
    """Every delivery and each of its attempts: read-only, for admins and auditors."""

    security_admins_change = False
    list_display = (
        "id",
        "kind",
        "channel",
        "recipient",
        "state",
        "attempts",
        "last_status",
        "last_error",
        "next_attempt_at",
        "created_at",
    )
    list_filter = ("state", "channel", "notification__kind")
    search_fields = ("recipient", "notification__subject_display", "notification__subject_id")
    inlines = [DeliveryAttemptInline]
    readonly_fields = (
        "notification",
        "channel",
        "endpoint",
        "recipient",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status",
        "last_error",
        "delivered_at",
        "created_at",
    )
    exclude = ("mac", "lease_until")

    @admin.display(description="event")
    def kind(self, obj: Delivery) -> str:
        return obj.notification.kind

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("notification")
