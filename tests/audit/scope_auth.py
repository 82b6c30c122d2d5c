"""TEST-ONLY authentication: stands in for tokens' BearerTokenAuthentication.

It trusts an ``X-Test-Scope`` header and sets ``request.auth`` to a claims dict,
which is the contract the real bearer class fulfils after verifying a JWT. It
lives under tests/ and must never be listed in a deployment's settings.
"""

from rest_framework.authentication import BaseAuthentication


class TestOnlyScopeClaimsAuthentication(BaseAuthentication):
    def authenticate(self, request):
        scope = request.META.get("HTTP_X_TEST_SCOPE")
        if scope is None:
            return None
        return (None, {"sub": "machine-under-test", "scope": scope})

    def authenticate_header(self, request):
        return 'Bearer realm="audit"'
