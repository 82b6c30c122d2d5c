from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import (
    SpectacularAPIView,
    SpectacularRedocView,
    SpectacularSwaggerSplitView,
)

from audit.api.views import AuditEventListView, AuditExportView
from audit.views import audit_keys
from clients.api import credentials as machine_credentials_api
from clients.api import views as machines_api
from identity_portal import health
from identity_portal.metrics import metrics_view
from identity_portal.mfa_views import console_mfa
from identity_portal.passkey_views import (
    AuthenticationBeginView,
    AuthenticationCompleteView,
    RegistrationBeginView,
    RegistrationCompleteView,
)
from tokens.api import keys as keys_api
from tokens.views import discovery, introspect, machine_self, revoke, token

# No public site behind the console ("View site" would answer 404).
admin.site.site_url = None

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    # Before the admin site's own URLs: the second step of console sign-in.
    path("console/mfa/", console_mfa, name="console-mfa"),
    # Passkey ceremonies (JSON), under the second step's prefix so that step reaches them;
    # the namespace and names are django-otp-webauthn's, which its code reverses.
    path(
        "console/mfa/passkeys/",
        include(
            (
                [
                    path(
                        "registration/begin/",
                        RegistrationBeginView.as_view(),
                        name="credential-registration-begin",
                    ),
                    path(
                        "registration/complete/",
                        RegistrationCompleteView.as_view(),
                        name="credential-registration-complete",
                    ),
                    path(
                        "authentication/begin/",
                        AuthenticationBeginView.as_view(),
                        name="credential-authentication-begin",
                    ),
                    path(
                        "authentication/complete/",
                        AuthenticationCompleteView.as_view(),
                        name="credential-authentication-complete",
                    ),
                ],
                "otp_webauthn",
            )
        ),
    ),
    # Ours first: the dashboard replaces the admin's index at console/.
    path("console/", include("identity_portal.console.urls")),
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
    path("api/v1/machines/self/secret", machine_self.self_secret, name="machine-self-secret"),
    path("api/v1/audit/events", AuditEventListView.as_view(), name="audit-events"),
    path("api/v1/audit/export", AuditExportView.as_view(), name="audit-export"),
    # The management API (machines, credentials, registries, keys) and its schema.
    path("api/v1/machines", machines_api.MachineListView.as_view(), name="api-machines"),
    path(
        "api/v1/machines/<str:client_id>",
        machines_api.MachineDetailView.as_view(),
        name="api-machine",
    ),
    path(
        "api/v1/machines/<str:client_id>/disable",
        machines_api.MachineDisableView.as_view(),
        name="api-machine-disable",
    ),
    path(
        "api/v1/machines/<str:client_id>/enable",
        machines_api.MachineEnableView.as_view(),
        name="api-machine-enable",
    ),
    path(
        "api/v1/machines/<str:client_id>/secrets",
        machines_api.SecretListView.as_view(),
        name="api-machine-secrets",
    ),
    path(
        "api/v1/machines/<str:client_id>/secrets/<int:secret_id>",
        machines_api.SecretDetailView.as_view(),
        name="api-machine-secret",
    ),
    path(
        "api/v1/machines/<str:client_id>/keys",
        machine_credentials_api.ClientKeyListView.as_view(),
        name="api-machine-keys",
    ),
    path(
        "api/v1/machines/<str:client_id>/keys/<str:kid>",
        machine_credentials_api.ClientKeyDetailView.as_view(),
        name="api-machine-key",
    ),
    path(
        "api/v1/machines/<str:client_id>/trusts",
        machine_credentials_api.TrustListView.as_view(),
        name="api-machine-trusts",
    ),
    path(
        "api/v1/machines/<str:client_id>/trusts/<str:trust_id>",
        machine_credentials_api.TrustDetailView.as_view(),
        name="api-machine-trust",
    ),
    path("api/v1/apply", machines_api.ApplyView.as_view(), name="api-apply"),
    path("api/v1/scopes", machines_api.ScopeListView.as_view(), name="api-scopes"),
    path("api/v1/audiences", machines_api.AudienceListView.as_view(), name="api-audiences"),
    path("api/v1/keys", keys_api.SigningKeyListView.as_view(), name="api-keys"),
    path("api/v1/keys/rotate", keys_api.SigningKeyRotateView.as_view(), name="api-keys-rotate"),
    path(
        "api/v1/keys/<str:kid>/revoke",
        keys_api.SigningKeyRevokeView.as_view(),
        name="api-key-revoke",
    ),
    path("api/v1/schema", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves its script as a file: no inline script under the console's CSP.
    path(
        "api/v1/docs", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"
    ),
    path("api/v1/redoc", SpectacularRedocView.as_view(url_name="api-schema"), name="api-redoc"),
]
