from django.contrib import admin
from django.templatetags.static import static
from django.urls import path
from django.views.generic import RedirectView

from audit.api.views import AuditEventListView, AuditExportView
from audit.views import audit_keys
from identity_portal import health
from identity_portal.metrics import metrics_view
from tokens.views import discovery, introspect, revoke, token

admin.site.site_header = "Machine Identity Portal"
admin.site.site_title = "Machine Identity Portal"
admin.site.index_title = "Console"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("console/", admin.site.urls),
    # Browsers ask for /favicon.ico on any page, JSON ones included: answer with the icon.
    path("favicon.ico", RedirectView.as_view(url=static("console/favicon.svg"), permanent=True)),
    path("oauth/token", token.token, name="oauth-token"),
    path("oauth/token/", token.token),
    path("oauth/introspect", introspect.introspect, name="oauth-introspect"),
    path("oauth/revoke", revoke.revoke, name="oauth-revoke"),
    path(".well-known/jwks.json", discovery.jwks, name="jwks"),
    path(".well-known/openid-configuration", discovery.discovery, name="openid-configuration"),
    path(".well-known/oauth-authorization-server", discovery.discovery, name="oauth-metadata"),
    path(".well-known/audit-keys.json", audit_keys, name="audit-keys"),
    path("api/v1/audit/events", AuditEventListView.as_view(), name="audit-events"),
    path("api/v1/audit/export", AuditExportView.as_view(), name="audit-export"),
]
