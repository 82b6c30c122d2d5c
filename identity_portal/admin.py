"""The console's people: who may sign in, and which role each holds.

Who holds a role is the most sensitive fact in the product, so its pages are
gated on the roles (not on Django model permissions, which a staff user could
be granted piecemeal) and every change lands in the audit trail:

- auditors and security admins may look at users and roles;
- only superusers may add, change or delete users or change their roles
  (a security admin cannot make itself superuser);
- the two role groups are fixed by a migration: nobody edits them here.

The toolkit's own token, grant and ID-token pages are removed: tokens live in
``tokens.IssuedToken`` and those pages would bypass the roles.
"""

from __future__ import annotations

from functools import partial

import django_otp.plugins.otp_static.admin
import django_otp.plugins.otp_totp.admin  # noqa: F401
import oauth2_provider.admin  # noqa: F401  (its pages registered first, then removed below)
from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm, AdminPasswordChangeForm
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.forms import AuthenticationForm
from django.contrib.auth.models import Group
from django.contrib.auth.views import PasswordChangeView
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice
from oauth2_provider.models import (
    get_access_token_model,
    get_grant_model,
    get_id_token_model,
    get_refresh_token_model,
)

from audit.choices import EventType
from audit.context import Actor, RequestContext, request_context
from clients.machine_cache import cache_safely
from clients.throttling import throttle_failure_record, throttle_keys, throttle_retry_after
from core import metrics
from core.admin import RoleGatedAdminMixin
from core.client_address import client_ip
from core.roles import AUDITORS, SECURITY_ADMINS, may_enter_console, role_names
from identity_portal.mfa import (
    mfa_authenticator_get,
    mfa_is_enrolled,
    mfa_recovery_codes_left,
    mfa_reset,
)
from identity_portal.models import PasskeyCredential
from identity_portal.services import console_roles_record, console_user_record

for _model in (
    get_access_token_model(),
    get_refresh_token_model(),
    get_id_token_model(),
    get_grant_model(),
):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)

# django-otp's own device pages would show authenticator keys and bypass the roles;
# a user's second factor is seen and reset on the user's page only (passkeys: the
# user's own page, /console/account/passkeys/).

User = get_user_model()
for _model in (User, Group, TOTPDevice, StaticDevice, PasskeyCredential):
    if admin.site.is_registered(_model):
        admin.site.unregister(_model)


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """Console sign-in with the same doubling backoff as the token endpoint.

    Failed sign-ins count per (username, IP) and per IP; past the free
    allowance the pair or the address waits, up to 15 minutes, and the count
    is forgotten after a quiet window (no permanent lockout, which would let
    anyone lock an admin out). A throttled attempt is refused before the
    password is checked, so it cannot be used to keep guessing.
    """

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "throttled": "Too many failed sign-ins. Try again in %(seconds)s s.",
        "no_role": "This account holds no console role. Ask a superuser to grant one.",
    }

    def confirm_login_allowed(self, user):
        """A role lets one in (superuser, security admin, auditor), not the staff flag."""
        AuthenticationForm.confirm_login_allowed(self, user)
        if not may_enter_console(user):
            raise ValidationError(self.error_messages["no_role"], code="no_role")

    def clean(self):
        username = str(self.cleaned_data.get("username") or "")
        keys = throttle_keys(
            client_id=username.casefold(), ip=client_ip(self.request), realm="console"
        )
        values = cache_safely(cache.get_many, list(keys.blocks), default={})
        retry_after = throttle_retry_after(values=values, keys=keys)
        if retry_after:
            metrics.throttled(kind="console_sign_in")
            raise ValidationError(
                self.error_messages["throttled"],
                code="throttled",
                params={"seconds": retry_after},
            )
        try:
            return super().clean()
        except ValidationError:
            cache_safely(throttle_failure_record, keys=keys)
            raise


admin.site.login_form = ThrottledAdminAuthenticationForm


class AuditedPasswordChangeForm(AdminPasswordChangeForm):
    """A console user's change of their own password, audited.

    The new password and its ``user.password_changed`` event commit together;
    the event names who and from where, never the password.
    """

    def __init__(self, user, *args, context: RequestContext, **kwargs):
        super().__init__(user, *args, **kwargs)
        self.audit_context = context

    def save(self, commit: bool = True):
        with transaction.atomic():
            user = super().save(commit=commit)
            console_user_record(
                event_type=EventType.USER_PASSWORD_CHANGED,
                user=user,
                actor=Actor.user(user),
                context=self.audit_context,
                details={},
            )
        return user


def console_password_change(request, extra_context=None):
    """The console's own-password page (``AdminSite.password_change``) with the audited form.

    Django's site picks the form class without the request; this one hands the
    form the request's context (address, user agent, request id) for the event.
    """
    site = admin.site
    request.current_app = site.name
    return PasswordChangeView.as_view(
        form_class=partial(AuditedPasswordChangeForm, context=request_context(request)),
        success_url=reverse("admin:password_change_done", current_app=site.name),
        extra_context={**site.each_context(request), **(extra_context or {})},
    )(request)


# The site's URLs look the view up on the instance when they are built.
admin.site.password_change = console_password_change


def _superuser(request) -> bool:
    return request.user.is_active and request.user.is_superuser


@admin.register(User)
class ConsoleUserAdmin(RoleGatedAdminMixin, UserAdmin):
    """Accounts and the roles they hold; Django's per-model permissions play no part.

    The role groups are the only groups offered. Only superusers see the
    password field (its "Reset password" control is theirs alone) and the
    second-factor reset.
    """

    change_form_template = "admin/auth/user/console_change_form.html"
    list_display = ("username", "roles", "two_factor", "is_active", "last_login")
    list_filter = ("is_superuser", "groups", "is_active")
    filter_horizontal = ()
    fieldsets = (
        (None, {"fields": ("username", "password")}),
        ("Person", {"fields": ("first_name", "last_name", "email")}),
        (
            "Roles",
            {
                "fields": ("is_active", "is_superuser", "groups"),
                "description": "Holding a role is what lets an account into the console: "
                "security admins change machines, secrets and keys; auditors read and export "
                "the audit trail; superusers also manage accounts and roles.",
            },
        ),
        ("Dates", {"fields": ("last_login", "date_joined")}),
    )

    @admin.display(description="Roles")
    def roles(self, obj) -> str:
        return ", ".join(role_names(obj)) or "none (cannot sign in)"

    @admin.display(description="Two-factor", boolean=True)
    def two_factor(self, obj) -> bool:
        return mfa_is_enrolled(user=obj)

    def get_fieldsets(self, request, obj=None):
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or _superuser(request):
            return fieldsets
        return tuple(
            (name, {**options, "fields": [f for f in options["fields"] if f != "password"]})
            for name, options in fieldsets
        )

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "groups":
            kwargs["queryset"] = Group.objects.filter(name__in=(SECURITY_ADMINS, AUDITORS))
            kwargs["help_text"] = ""
            kwargs["widget"] = forms.CheckboxSelectMultiple
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def has_add_permission(self, request):
        return _superuser(request)

    def has_change_permission(self, request, obj=None):
        return _superuser(request)

    def has_delete_permission(self, request, obj=None):
        return _superuser(request)

    def get_urls(self):
        return [
            path(
                "<int:object_id>/reset-mfa/",
                self.admin_site.admin_view(self.reset_mfa_view),
                name="auth_user_reset_mfa",
            ),
            *super().get_urls(),
        ]

    def change_view(self, request, object_id, form_url="", extra_context=None):
        user = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if user is not None:
            extra["mfa_enrolled"] = mfa_is_enrolled(user=user)
            extra["mfa_codes_left"] = mfa_recovery_codes_left(user=user)
            extra["mfa_authenticator"] = mfa_authenticator_get(user=user) is not None
            extra["mfa_passkeys"] = PasskeyCredential.objects.filter(
                user=user, confirmed=True
            ).count()
            extra["can_reset_mfa"] = _superuser(request)
            extra["reset_mfa_url"] = reverse("admin:auth_user_reset_mfa", args=[user.pk])
        return super().change_view(request, object_id, form_url, extra)

    def reset_mfa_view(self, request, object_id: int):
        """A superuser removes a user's second factor; the user enrols again at next sign-in."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        if not _superuser(request):
            raise PermissionDenied
        user = get_object_or_404(User, pk=object_id)
        mfa_reset(user=user, actor=Actor.user(request.user), context=request_context(request))
        self.message_user(
            request,
            f"Two-factor sign-in of {user.get_username()} reset: "
            "they set up a new authenticator at their next sign-in.",
        )
        return HttpResponseRedirect(reverse("admin:auth_user_change", args=[user.pk]))

    # Django's admin calls these inside the transaction of the change; the
    # audit event joins it. They also cover the password-change page.
    def log_addition(self, request, obj, message):
        console_user_record(
            event_type=EventType.USER_CREATED,
            user=obj,
            actor=Actor.user(request.user),
            context=request_context(request),
            details={"superuser": obj.is_superuser, "staff": obj.is_staff},
        )
        return super().log_addition(request, obj, message)

    def log_change(self, request, obj, message):
        console_user_record(
            event_type=EventType.USER_UPDATED,
            user=obj,
            actor=Actor.user(request.user),
            context=request_context(request),
            details={"change": message if isinstance(message, list) else str(message)},
        )
        return super().log_change(request, obj, message)

    def log_deletions(self, request, queryset):
        for user in queryset:
            self._record_deletion(request, user)
        return super().log_deletions(request, queryset)

    def log_deletion(self, request, obj, object_repr):
        self._record_deletion(request, obj)
        return super().log_deletion(request, obj, object_repr)

    def _record_deletion(self, request, user) -> None:
        console_user_record(
            event_type=EventType.USER_DELETED,
            user=user,
            actor=Actor.user(request.user),
            context=request_context(request),
            details={"superuser": user.is_superuser},
        )

    def save_model(self, request, obj, form, change):
        # Roles as they were, read before anything is written (group
        # membership is written later, in save_related).
        request._console_roles_before = _roles(User.objects.get(pk=obj.pk)) if change else set()
        super().save_model(request, obj, form, change)

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        before = getattr(request, "_console_roles_before", set())
        after = _roles(form.instance)
        console_roles_record(
            user=form.instance,
            granted=sorted(after - before),
            revoked=sorted(before - after),
            actor=Actor.user(request.user),
            context=request_context(request),
        )


def _roles(user) -> set[str]:
    """Group names plus the two flags that are roles too."""
    roles = set(user.groups.values_list("name", flat=True))
    if user.is_superuser:
        roles.add("superuser")
    if user.is_staff:
        roles.add("staff")
    return roles


@admin.register(Group)
class ConsoleGroupAdmin(RoleGatedAdminMixin, GroupAdmin):
    # The two groups are made by a migration; roles change on the user page.
    security_admins_change = False
