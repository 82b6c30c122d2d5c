"""What every management API view shares: errors, callers, throttling, ETags, idempotency.

- Errors are RFC 9457 ``application/problem+json`` documents (``type``, ``title``,
  ``status``, ``detail``, and ``errors`` per field for a validation failure).
- The caller is a machine presenting one of our access tokens (its claims are
  ``request.auth``) or a console user with a session (and its CSRF token on
  writes, which DRF's ``SessionAuthentication`` enforces).
- Rate limits are per caller, with ``429`` and ``Retry-After``.
- Updates answer with an ``ETag``; an ``If-Match`` that no longer matches is
  refused with ``412`` before anything changes.
- ``Idempotency-Key`` on a POST: the first request's answer is kept (without any
  secret in it: a secret is shown once) and a retry gets it back, so a retried
  create creates nothing twice.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone
from django.utils.module_loading import import_string
from rest_framework import exceptions, status
from rest_framework.parsers import JSONParser
from rest_framework.response import Response
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.utils.encoders import JSONEncoder
from rest_framework.views import APIView

from audit.choices import ActorKind
from audit.context import Actor
from clients.models import ApiIdempotencyKey

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://machine-identity-portal.dev/problems/"
IDEMPOTENCY_KEY_MAX_LENGTH = 255
# Visible ASCII, as a header value carries it unchanged through every proxy.
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"
# Keys in a response body that carry a secret: never stored, never shown twice.
SECRET_FIELDS = frozenset({"client_secret"})


class PreconditionFailed(exceptions.APIException):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    default_detail = "The resource changed since you read it: read it again (If-Match)."
    default_code = "precondition_failed"


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the resource's state."
    default_code = "conflict"


class IdempotencyKeyReused(exceptions.APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used for a different request."
    default_code = "idempotency_key_reused"


def _problem(*, status_code: int, code: str, title: str, detail: str, **extra) -> dict[str, Any]:
    body = {
        "type": PROBLEM_BASE + code.replace("_", "-"),
        "title": title,
        "status": status_code,
        "detail": detail,
    }
    body.update(extra)
    return body


def _flat(detail) -> str:
    if isinstance(detail, list):
        return " ".join(_flat(item) for item in detail)
    if isinstance(detail, dict):
        return " ".join(f"{key}: {_flat(value)}" for key, value in detail.items())
    return str(detail)


def _field_errors(detail) -> dict[str, list[str]]:
    if isinstance(detail, dict):
        return {str(key): [_flat(value)] for key, value in detail.items()}
    return {"non_field_errors": [_flat(detail)]}


def problem_exception_handler(exc, context) -> Response | None:
    """DRF's exception handler, answering RFC 9457 problem documents."""
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(
            exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages}
        )
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if not isinstance(exc, exceptions.APIException):
        return None  # a real defect: Django's 500 handling and logging
    code = exc.get_codes() if not isinstance(exc, exceptions.ValidationError) else "invalid"
    code = code if isinstance(code, str) else "invalid"
    title = _TITLES.get(exc.status_code, "Error")
    extra: dict[str, Any] = {}
    if isinstance(exc, exceptions.ValidationError):
        detail = "The request is not valid: see errors."
        extra["errors"] = _field_errors(exc.detail)
    else:
        detail = _flat(exc.detail)
    body = _problem(status_code=exc.status_code, code=code, title=title, detail=detail, **extra)
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None) is not None:
        headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    return Response(
        body, status=exc.status_code, headers=headers, content_type=PROBLEM_CONTENT_TYPE
    )


_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    409: "Conflict",
    412: "Precondition Failed",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
}


@dataclass(frozen=True)
class Caller:
    """Who calls the management API: a machine (by its token) or a console user."""

    kind: str  # "machine" or "user"
    id: str
    actor: Actor
    scopes: frozenset[str]  # a machine's token scopes; empty for users

    @property
    def is_machine(self) -> bool:
        return self.kind == "machine"


def caller_of(request) -> Caller:
    claims = request.auth
    if isinstance(claims, dict):
        client_id = str(claims.get("client_id") or "")
        principal = request.user
        display = getattr(principal, "name", "") or client_id
        scope = claims.get("scope")
        scopes = frozenset(scope.split()) if isinstance(scope, str) else frozenset()
        return Caller(
            kind="machine",
            id=client_id,
            actor=Actor(kind=ActorKind.MACHINE, id=client_id, display=str(display)[:255]),
            scopes=scopes,
        )
    user = request.user
    return Caller(kind="user", id=str(user.pk), actor=Actor.user(user), scopes=frozenset())


class CallerRateThrottle(SimpleRateThrottle):
    """``MANAGEMENT_API_RATE`` requests per caller (a machine or a user), not per address."""

    scope = "management"

    def get_rate(self):
        return settings.MANAGEMENT_API_RATE

    def get_cache_key(self, request, view):
        if isinstance(request.auth, dict):
            ident = f"m:{request.auth.get('client_id', '')}"
        elif getattr(request.user, "is_authenticated", False):
            ident = f"u:{request.user.pk}"
        else:
            ident = f"a:{self.get_ident(request)}"
        return f"mip:throttle:management:{hashlib.sha256(ident.encode()).hexdigest()[:32]}"


def etag_of(representation: dict[str, Any]) -> str:
    """A strong ETag over the resource's JSON representation (secrets never part of it)."""
    canonical = json.dumps(representation, sort_keys=True, separators=(",", ":"), default=str)
    return '"' + hashlib.sha256(canonical.encode()).hexdigest()[:32] + '"'


def if_match_check(request, current_etag: str) -> None:
    """412 when the caller's ``If-Match`` names another version (RFC 9110 section 13.1.1)."""
    header = request.META.get("HTTP_IF_MATCH")
    if header is None:
        return
    candidates = [item.strip() for item in header.split(",")]
    if "*" in candidates or current_etag in candidates:
        return
    raise PreconditionFailed()


class ManagementApiView(APIView):
    """Base of every management API view: who may call, how errors and limits look."""

    throttle_classes = [CallerRateThrottle]
    # JSON only: one body format to validate, and the schema says so (415 otherwise).
    parser_classes = [JSONParser]

    def get_authenticators(self):
        # Read per request, like the audit API, so the deployment chooses the classes.
        return [import_string(path)() for path in settings.MANAGEMENT_API_AUTHENTICATION_CLASSES]

    def get_exception_handler(self):
        return problem_exception_handler

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        # Registry data and secrets must not linger in browser or proxy caches.
        response["Cache-Control"] = "no-store"
        return response


def _fingerprint(request) -> str:
    body = request.body if hasattr(request, "body") else b""
    digest = hashlib.sha256()
    digest.update(request.method.encode() + b"\0" + request.get_full_path().encode() + b"\0")
    digest.update(body)
    return digest.hexdigest()


def _without_secrets(data: Any) -> Any:
    if isinstance(data, dict):
        return {
            key: _without_secrets(value) for key, value in data.items() if key not in SECRET_FIELDS
        }
    if isinstance(data, list):
        return [_without_secrets(item) for item in data]
    return data


def _contains_secret(data: Any) -> bool:
    if isinstance(data, dict):
        return any(key in SECRET_FIELDS or _contains_secret(v) for key, v in data.items())
    if isinstance(data, list):
        return any(_contains_secret(item) for item in data)
    return False


def _stored_body(data: Any) -> Any:
    """The answer as JSON would render it (dates as strings), with every secret removed."""
    return _without_secrets(json.loads(json.dumps(data, cls=JSONEncoder)))


def idempotent(request, caller: Caller, perform) -> Response:
    """Run ``perform()`` once per ``Idempotency-Key``; a retry gets the first answer back.

    The key row is inserted in the same transaction as the change: a concurrent
    retry waits on the unique index until the first commits, then reads its
    answer; if the first rolled back, the retry runs. A key reused for another
    request (method, path or body differ) is refused with 422. The stored answer
    never holds a secret, so a replayed create says the secret was already shown.
    """
    key = request.META.get("HTTP_IDEMPOTENCY_KEY")
    if key is None:
        return perform()
    if not re.fullmatch(IDEMPOTENCY_KEY_PATTERN, key):
        raise exceptions.ValidationError(
            {"Idempotency-Key": [f"1 to {IDEMPOTENCY_KEY_MAX_LENGTH} visible ASCII characters"]}
        )
    fingerprint = _fingerprint(request)
    caller_key = f"{caller.kind}:{caller.id}"
    horizon = timezone.now() - settings.MANAGEMENT_API_IDEMPOTENCY_TTL
    try:
        with transaction.atomic():
            ApiIdempotencyKey.objects.filter(
                caller=caller_key, key=key, created_at__lt=horizon
            ).delete()
            record = ApiIdempotencyKey.objects.create(
                caller=caller_key, key=key, fingerprint=fingerprint, created_at=timezone.now()
            )
            response = perform()
            if response.status_code >= 400:
                # Nothing was done: the key stays free for a corrected request.
                transaction.set_rollback(True)
                return response
            record.status = response.status_code
            record.body = _stored_body(response.data)
            record.secret_withheld = _contains_secret(response.data)
            record.save(update_fields=["status", "body", "secret_withheld"])
            return response
    except IntegrityError:
        pass
    first = ApiIdempotencyKey.objects.filter(caller=caller_key, key=key).first()
    if first is None or first.status is None:
        raise Conflict("A request with this Idempotency-Key is in progress: retry later.")
    if first.fingerprint != fingerprint:
        raise IdempotencyKeyReused()
    body = first.body
    if first.secret_withheld and isinstance(body, dict):
        body = {**body, "secret_already_shown": True}
    return Response(body, status=first.status, headers={"Idempotent-Replayed": "true"})
