"""Public metadata: JWKS (RFC 7517) and discovery (RFC 8414, OpenID Connect Discovery).

Both are public and cacheable. JWKS is cached for less than the pending
period of a rotated key (``JWKS_MAX_AGE`` < ``KEY_PUBLISH_DELAY``), so every
verifier sees a new key before it signs anything.
"""

from __future__ import annotations

import json

from django.conf import settings
from django.http import HttpResponse
from django.views.decorators.http import require_GET

from tokens.selectors import discovery_document, jwks_document


def _public_json(payload: dict, *, content_type: str, max_age: int) -> HttpResponse:
    response = HttpResponse(json.dumps(payload, indent=None), content_type=content_type)
    response["Cache-Control"] = f"public, max-age={max_age}"
    response["Access-Control-Allow-Origin"] = "*"
    return response


@require_GET
def jwks(request) -> HttpResponse:
    return _public_json(
        jwks_document(), content_type="application/jwk-set+json", max_age=settings.JWKS_MAX_AGE
    )


@require_GET
def discovery(request) -> HttpResponse:
    return _public_json(
        discovery_document(), content_type="application/json", max_age=settings.JWKS_MAX_AGE
    )
