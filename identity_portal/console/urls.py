"""The console's own URLs, mounted under ``console/`` before Django's admin."""

from __future__ import annotations

from django.contrib import admin
from django.urls import path

from identity_portal import passkey_views
from identity_portal.console import views

wrap = admin.site.admin_view

urlpatterns = [
    path("", wrap(views.dashboard), name="console-dashboard"),
    path("account/passkeys/", wrap(passkey_views.passkeys_page), name="console-passkeys"),
    path(
        "account/passkeys/<int:credential_id>/remove/",
        wrap(passkey_views.passkey_remove_view),
        name="console-passkey-remove",
    ),
    path("audit/", wrap(views.audit_log), name="console-audit-log"),
    path("audit/export/", wrap(views.audit_export), name="console-audit-export"),
    path(
        "machines/<int:object_id>/<slug:action>/",
        wrap(views.machine_action),
        name="console-machine-action",
    ),
]
