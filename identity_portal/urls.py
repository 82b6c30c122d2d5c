from django.contrib import admin
from django.urls import path

from identity_portal import health

admin.site.site_header = "Machine Identity Portal"
admin.site.site_title = "Machine Identity Portal"
admin.site.index_title = "Console"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("console/", admin.site.urls),
]
