"""TEST-ONLY authentication: stands in for tokens' BearerTokenAuthentication.

It trusts an ``X-Test-Scope`` header (and ``X-Test-Aud``, a JSON value, defaulting to
the audit API's audience) and sets ``request.auth`` to a claims dict,
which is the contract the real bearer class fulfils after verifying a JWT. It
lives under tests/ and must never be listed in a deployment's settings.
"""

import json

from django.conf import settings
from rest_framework.authentication import BaseAuthentication


class TestOnlyScopeClaimsAuthentication(BaseAuthentication):
    def authenticate(self, request):
        scope = request.META.get("HTTP_X_TEST_SCOPE")
        if scope is None:
            return None
        aud = request.META.get("HTTP_X_TEST_AUD")
        aud = settings.AUDIT_API_AUDIENCE if aud is None else json.loads(aud)
        return (None, {"sub": "machine-under-test", "scope": scope, "aud": aud})

    def authenticate_header(self, request):
        return 'Bearer realm="audit"'
