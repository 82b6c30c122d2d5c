"""The audit public key, published for auditors who verify exports and checkpoints."""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from audit.signing import audit_public_jwk


@require_GET
def audit_keys(request):
    response = JsonResponse({"keys": [audit_public_jwk()]})
    response["Cache-Control"] = "public, max-age=3600"
    return response
