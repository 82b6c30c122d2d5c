"""The console pages for machines, their secrets and the registries.

Thin: forms check shapes, services do every write and its audit event.
Security admins change; auditors see the same pages read-only. A raw secret
is shown once, on a page rendered for that one response (never a message
stored in the session) and marked ``Cache-Control: no-store``. A change that
is saved but could not be told to the cache (``clients.cache_outcome``)
comes with a warning next to its success message.
"""

from __future__ import annotations

import functools
from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers, patch_cache_control
from django.utils.http import urlencode

from audit.context import Actor, request_context
from audit.selectors import audit_events_of_machine, audit_machine_counts
from clients.cache_outcome import cache_failures_collected
from clients.forms import (
    REGISTER_FIELDS,
    AudienceForm,
    ClientKeyForm,
    MachineForm,
    MachineRegisterForm,
    RotateSecretForm,
)
from clients.models import Audience, ClientKey, ClientSecret, Machine, Scope
from clients.selectors import secret_expiry
from clients.services import (
    audience_create,
    audience_update,
    client_key_add,
    client_key_remove,
    machine_delete,
    machine_disable,
    machine_enable,
    machine_register,
    machine_update,
    scope_create,
    scope_update,
    secret_revoke,
    secret_rotate,
)
from core.admin import RoleGatedAdminMixin
from core.roles import is_security_admin


def _warns_when_cache_not_told(view):
    """Run an admin view and add a warning for each change the cache did not hear of.

    Around the whole view: Django's change and delete views commit (and the
    cache is told) only when their own transaction ends.
    """

    @functools.wraps(view)
    def wrapped(self, request, *args, **kwargs):
        with cache_failures_collected() as failures:
            response = view(self, request, *args, **kwargs)
        for message in failures:
            messages.warning(request, message)
        return response

    return wrapped


class RoleGatedAdmin(RoleGatedAdminMixin, admin.ModelAdmin):
    """Security admins change; auditors only look; nobody else sees the page."""

    changeform_view = _warns_when_cache_not_told(admin.ModelAdmin.changeform_view)
    changelist_view = _warns_when_cache_not_told(admin.ModelAdmin.changelist_view)
    delete_view = _warns_when_cache_not_told(admin.ModelAdmin.delete_view)

    def save_related(self, request, form, formsets, change):
        """The services already wrote the relations."""


def _actor_and_context(request):
    return Actor.user(request.user), request_context(request)


def _example_request(machine: Machine) -> dict[str, str]:
    """What the page's curl and Python examples ask for: this machine's own scope and audience."""
    scopes = (
        sorted(scope.name for scope in machine.default_scopes.all())
        or sorted(scope.name for scope in machine.allowed_scopes.all())[:1]
    )
    audience = machine.default_audience or machine.allowed_audiences.order_by("uri").first()
    return {
        "scope": " ".join(scopes),
        "resource": audience.uri if audience else "",
        "token_url": f"{settings.ISSUER}/oauth/token",
    }


def _secret_page(admin_site, request, machine: Machine, raw: str, title: str):
    response = TemplateResponse(
        request,
        "clients/secret_once.html",
        {
            **admin_site.each_context(request),
            "title": title,
            "machine": machine,
            "client_secret": raw,
            "example": _example_request(machine),
            "change_url": reverse("admin:clients_machine_change", args=[machine.pk]),
        },
    )
    # The only copy of the secret: no cache, no back-button replay.
    add_never_cache_headers(response)
    patch_cache_control(response, no_store=True, private=True)
    return response


# The toolkit registers its own page for the (swapped) application model: ours replaces it.
if admin.site.is_registered(Machine):
    admin.site.unregister(Machine)


@admin.register(Machine)
class MachineAdmin(RoleGatedAdmin):
    form = MachineForm
    list_display = ("name", "client_id", "enabled", "owner_team", "last_used_at", "deleted_at")
    list_filter = ("enabled", ("deleted_at", admin.EmptyFieldListFilter), "allowed_scopes")
    search_fields = ("name", "client_id", "owner_team", "owner_email", "subject")
    actions = ["disable_selected", "enable_selected"]
    # The toolkit's Application links to its own page ("View on site"), which the portal has not.
    view_on_site = False
    identity_fields = (
        "client_id",
        "subject",
        "enabled",
        "created_by",
        "created",
        "updated",
        "last_used_at",
        "last_used_from",
        "deleted_at",
    )

    @admin.display(description="Last used from (address)")
    def last_used_from(self, obj):
        # The column's own label reads "Last used ip".
        return obj.last_used_ip

    def get_fields(self, request, obj=None):
        if obj is None:
            return list(REGISTER_FIELDS)
        return [*self.identity_fields, *MachineForm.Meta.fields]

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else self.identity_fields

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = MachineRegisterForm
        return super().get_form(request, obj, change, **kwargs)

    def has_change_permission(self, request, obj=None):
        # A deleted machine is history: its page is read-only, machine_update would refuse.
        if obj is not None and obj.deleted_at is not None:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return is_security_admin(request.user)

    def change_view(self, request, object_id, form_url="", extra_context=None):
        machine = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if machine is not None:
            extra["secrets"] = [
                {
                    "secret": secret,
                    "expires_at": secret_expiry(secret=secret, machine=machine),
                    "revoke_url": reverse(
                        "admin:clients_machine_revoke_secret", args=[machine.pk, secret.pk]
                    ),
                }
                for secret in machine.secrets.order_by("-created_at", "-id")
            ]
            extra["can_manage_secrets"] = (
                is_security_admin(request.user) and machine.deleted_at is None
            )
            extra["rotate_url"] = reverse("admin:clients_machine_rotate_secret", args=[machine.pk])
            extra["client_keys"] = [
                {
                    "key": key,
                    "remove_url": reverse(
                        "admin:clients_machine_remove_key", args=[machine.pk, key.pk]
                    ),
                }
                for key in machine.keys.all()
            ]
            extra["add_key_url"] = reverse("admin:clients_machine_add_key", args=[machine.pk])
            extra.update(_activity(machine))
            extra["now"] = timezone.now()
        return super().change_view(request, object_id, form_url, extra)

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path(
                "<int:object_id>/rotate-secret/",
                wrap(self.rotate_secret_view),
                name="clients_machine_rotate_secret",
            ),
            path(
                "<int:object_id>/secrets/<int:secret_id>/revoke/",
                wrap(self.revoke_secret_view),
                name="clients_machine_revoke_secret",
            ),
            path(
                "<int:object_id>/keys/add/",
                wrap(self.add_key_view),
                name="clients_machine_add_key",
            ),
            path(
                "<int:object_id>/keys/<int:key_id>/remove/",
                wrap(self.remove_key_view),
                name="clients_machine_remove_key",
            ),
            *super().get_urls(),
        ]

    # --- writes, each through one service ---------------------------------------

    def save_model(self, request, obj, form, change):
        actor, context = _actor_and_context(request)
        if change:
            machine_update(actor=actor, machine=obj, context=context, **form.service_kwargs())
            return
        machine, raw = machine_register(
            actor=actor, created_by=request.user, context=context, **form.service_kwargs()
        )
        for field in Machine._meta.concrete_fields:
            setattr(obj, field.attname, getattr(machine, field.attname))
        obj._state.adding = False
        obj._raw_secret = raw  # only for response_add, this request

    def response_add(self, request, obj, post_url_continue=None):
        raw = getattr(obj, "_raw_secret", None)
        if raw is None:
            return super().response_add(request, obj, post_url_continue)
        return _secret_page(self.admin_site, request, obj, raw, "Machine registered")

    def delete_model(self, request, obj):
        actor, context = _actor_and_context(request)
        machine_delete(actor=actor, machine=obj, context=context)

    def delete_queryset(self, request, queryset):
        actor, context = _actor_and_context(request)
        for machine in queryset:
            machine_delete(actor=actor, machine=machine, context=context)

    def get_deleted_objects(self, objs, request):
        # A machine is soft-deleted (disabled, secrets revoked); nothing cascades.
        return [str(obj) for obj in objs], {"machines": len(objs)}, set(), []

    # permissions=["change"]: Django offers (and runs) an action only to users with
    # has_change_permission, so an auditor's POST of the action form changes nothing.
    @admin.action(description="Disable selected machines", permissions=["change"])
    def disable_selected(self, request, queryset):
        actor, context = _actor_and_context(request)
        count = 0
        for machine in queryset.filter(deleted_at__isnull=True):
            machine_disable(actor=actor, machine=machine, context=context)
            count += 1
        self.message_user(request, f"{count} machine(s) disabled.", messages.SUCCESS)

    @admin.action(description="Enable selected machines", permissions=["change"])
    def enable_selected(self, request, queryset):
        actor, context = _actor_and_context(request)
        count = 0
        for machine in queryset.filter(deleted_at__isnull=True):
            machine_enable(actor=actor, machine=machine, context=context)
            count += 1
        self.message_user(request, f"{count} machine(s) enabled.", messages.SUCCESS)

    @_warns_when_cache_not_told
    def rotate_secret_view(self, request, object_id: int):
        if not is_security_admin(request.user):
            raise PermissionDenied
        machine = get_object_or_404(Machine, pk=object_id, deleted_at__isnull=True)
        form = RotateSecretForm(
            request.POST if request.method == "POST" else None,
            initial={"grace": machine.rotation_grace},
            policy=machine.rotation_grace,
        )
        if request.method == "POST" and form.is_valid():
            actor, context = _actor_and_context(request)
            try:
                _, raw = secret_rotate(
                    actor=actor, machine=machine, grace=form.cleaned_data["grace"], context=context
                )
            except ValidationError as exc:
                form.add_error("grace", exc.messages)
            else:
                return _secret_page(self.admin_site, request, machine, raw, "Secret rotated")
        return TemplateResponse(
            request,
            "clients/rotate_secret.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Rotate the secret of {machine}",
                "machine": machine,
                "form": form,
                "opts": self.opts,
                "change_url": reverse("admin:clients_machine_change", args=[machine.pk]),
            },
        )

    @_warns_when_cache_not_told
    def add_key_view(self, request, object_id: int):
        if not is_security_admin(request.user):
            raise PermissionDenied
        machine = get_object_or_404(Machine, pk=object_id, deleted_at__isnull=True)
        form = ClientKeyForm(
            request.POST if request.method == "POST" else None,
            request.FILES if request.method == "POST" else None,
        )
        change_url = reverse("admin:clients_machine_change", args=[machine.pk])
        if request.method == "POST" and form.is_valid():
            actor, context = _actor_and_context(request)
            try:
                key = client_key_add(
                    actor=actor, machine=machine, jwk=form.cleaned_data["parsed"], context=context
                )
            except ValidationError as exc:
                form.add_error(None, exc.messages)
            else:
                self.message_user(request, f"Key {key.kid} added.", messages.SUCCESS)
                return HttpResponseRedirect(change_url)
        return TemplateResponse(
            request,
            "clients/add_key.html",
            {
                **self.admin_site.each_context(request),
                "title": f"Add a public key to {machine}",
                "machine": machine,
                "form": form,
                "opts": self.opts,
                "change_url": change_url,
            },
        )

    @_warns_when_cache_not_told
    def remove_key_view(self, request, object_id: int, key_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not is_security_admin(request.user):
            raise PermissionDenied
        key = get_object_or_404(ClientKey, pk=key_id, machine_id=object_id)
        actor, context = _actor_and_context(request)
        client_key_remove(actor=actor, machine=key.machine, kid=key.kid, context=context)
        self.message_user(request, f"Key {key.kid} removed.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:clients_machine_change", args=[object_id]))

    @_warns_when_cache_not_told
    def revoke_secret_view(self, request, object_id: int, secret_id: int):
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not is_security_admin(request.user):
            raise PermissionDenied
        secret = get_object_or_404(ClientSecret, pk=secret_id, machine_id=object_id)
        actor, context = _actor_and_context(request)
        secret_revoke(actor=actor, secret=secret, context=context)
        self.message_user(request, f"Secret {secret} revoked.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:clients_machine_change", args=[object_id]))


def _activity(machine: Machine) -> dict:
    """The machine page's last 24 hours and newest events, from the audit trail."""
    day_ago = timezone.now() - timedelta(hours=24)
    return {
        "counts_24h": audit_machine_counts(client_id=machine.client_id, since=day_ago),
        "activity": audit_events_of_machine(client_id=machine.client_id, limit=10),
        "audit_log_url": reverse("console-audit-log")
        + "?"
        + urlencode({"machine": machine.client_id}),
        "failures_url": reverse("console-audit-log")
        + "?"
        + urlencode({"machine": machine.client_id, "outcome": "failure"}),
    }


@admin.register(Scope)
class ScopeAdmin(RoleGatedAdmin):
    list_display = ("name", "description", "created_at")
    search_fields = ("name", "description")
    fields = ("name", "description")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("name",)

    def save_model(self, request, obj, form, change):
        actor, context = _actor_and_context(request)
        if change:
            scope_update(actor=actor, scope=obj, description=obj.description, context=context)
            return
        scope = scope_create(
            actor=actor, name=obj.name, description=obj.description, context=context
        )
        obj.pk, obj.created_at = scope.pk, scope.created_at
        obj._state.adding = False


@admin.register(Audience)
class AudienceAdmin(RoleGatedAdmin):
    form = AudienceForm
    list_display = ("uri", "name", "created_at")
    search_fields = ("uri", "name", "description")

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("uri",)

    def save_model(self, request, obj, form, change):
        actor, context = _actor_and_context(request)
        if change:
            audience_update(
                actor=actor,
                audience=obj,
                name=obj.name,
                description=obj.description,
                context=context,
            )
            return
        audience = audience_create(
            actor=actor, uri=obj.uri, name=obj.name, description=obj.description, context=context
        )
        obj.pk, obj.created_at = audience.pk, audience.created_at
        obj._state.adding = False


# The federation trusts' pages live with the rest of federation.
import clients.federation.admin  # noqa: E402, F401
