"""Request ids: accepted from a trusted caller when well-formed, else generated."""

from __future__ import annotations

import re
import uuid

from identity_portal.log import request_id_var

REQUEST_ID_HEADER = "X-Request-ID"
# Bounded and plain so a caller cannot inject log lines or huge values.
_WELL_FORMED = re.compile(r"^[A-Za-z0-9._\-]{8,128}$")


class RequestIdMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        offered = request.META.get("HTTP_X_REQUEST_ID", "")
        request_id = offered if _WELL_FORMED.match(offered) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response[REQUEST_ID_HEADER] = request_id
        return response
