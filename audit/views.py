"""The audit public keys, published for auditors who verify exports and checkpoints."""

from django.http import JsonResponse
from django.views.decorators.http import require_GET

from audit.selectors import audit_keys_published


@require_GET
def audit_keys(request):
    """Current and retired keys: an export or checkpoint signed before a rotation still verifies.

    Each JWK carries ``status`` (``current`` signs now, ``retired`` only verifies) and
    the period it signed checkpoints in (``not_before``/``not_after``, null before its
    first checkpoint). Periods come from the checkpoint table and are informative: a
    verifier trusts the keys, never the periods.
    """
    response = JsonResponse({"keys": audit_keys_published()})
    response["Cache-Control"] = "public, max-age=3600"
    return response
