from django.contrib import admin
from django.urls import path

from audit.api.views import AuditEventListView, AuditExportView
from audit.views import audit_keys
from identity_portal import health

admin.site.site_header = "Machine Identity Portal"
admin.site.site_title = "Machine Identity Portal"
admin.site.index_title = "Console"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("console/", admin.site.urls),
    path(".well-known/audit-keys.json", audit_keys, name="audit-keys"),
    path("api/v1/audit/events", AuditEventListView.as_view(), name="audit-events"),
    path("api/v1/audit/export", AuditExportView.as_view(), name="audit-export"),
]
