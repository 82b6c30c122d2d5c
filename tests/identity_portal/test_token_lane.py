"""The token lane answers exactly like the full Django stack (one intended difference)."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from django.core.cache import cache
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.http import HttpResponse

from audit.models import AuditEvent
from identity_portal import token_lane
from identity_portal.wsgi import application
from tests.tokens.helpers import FORM, basic
from tokens.models import IssuedToken

# Headers that differ between any two responses, whichever lane answers.
VARYING = {"X-Request-ID", "Content-Length", "Date"}


def _via_lane(*, body: bytes, method: str = "POST", app=None, **meta) -> tuple[int, dict, bytes]:
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": "/oauth/token",
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "CONTENT_LENGTH": str(len(body)),
        **meta,
    }
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = dict(headers)

    # As Django's test client does: the test's transaction must survive the
    # request signals, which would otherwise close its connection.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        result = (app or application)(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            result.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return captured["status"], captured["headers"], content


def _via_django(client, *, body: bytes, method: str = "POST", **meta):
    if method == "GET":
        response = client.get("/oauth/token", **meta)
    else:
        meta.setdefault("CONTENT_TYPE", FORM)
        content_type = meta.pop("CONTENT_TYPE")
        response = client.generic(method, "/oauth/token", body, content_type=content_type, **meta)
    return response.status_code, dict(response.items()), response.content


def _stable(headers: dict) -> dict:
    return {name: value for name, value in headers.items() if name not in VARYING}


def _cases(registered):
    good = b"grant_type=client_credentials&scope=orders%3Aread"
    return {
        "wrong secret": dict(body=good, HTTP_AUTHORIZATION=basic(registered.client_id, "mip_cs_x")),
        "unknown client": dict(body=good, HTTP_AUTHORIZATION=basic("nobody", "mip_cs_x")),
        "bad base64": dict(body=good, HTTP_AUTHORIZATION="Basic !!!not-base64"),
        "no colon": dict(
            body=good, HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"nocolon").decode()
        ),
        "empty body": dict(body=b"", HTTP_AUTHORIZATION=basic(registered.client_id, "x")),
        "JSON body": dict(
            body=b'{"grant_type": "client_credentials"}', CONTENT_TYPE="application/json"
        ),
        "unknown grant": dict(
            body=b"grant_type=password", HTTP_AUTHORIZATION=basic(registered.client_id, "x")
        ),
        "repeated parameter": dict(
            body=b"grant_type=client_credentials&scope=a&scope=b",
            HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
        ),
        "GET": dict(body=b"", method="GET"),
    }


@pytest.mark.django_db
def test_refusals_are_byte_identical_in_both_lanes(client, signing_key, machine_factory):
    registered = machine_factory()
    for name, case in _cases(registered).items():
        cache.clear()  # the same throttle state for both
        # Django's test client sends no Content-Type with an empty body; nor do we.
        content_type = case.get("CONTENT_TYPE", FORM if case["body"] else None)
        lane_case = {**case, "CONTENT_TYPE": content_type} if content_type else case
        lane_status, lane_headers, lane_body = _via_lane(**lane_case)
        cache.clear()
        django_status, django_headers, django_body = _via_django(client, **case)

        assert (name, lane_status, lane_body) == (name, django_status, django_body)
        assert _stable(lane_headers) == _stable(django_headers), name
    assert IssuedToken.objects.count() == 0


@pytest.mark.django_db
def test_a_token_from_the_lane_is_issued_recorded_and_shaped_like_djangos(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    body = b"grant_type=client_credentials&scope=orders%3Aread"
    auth = basic(registered.client_id, registered.secret)

    lane_status, lane_headers, lane_body = _via_lane(
        body=body, CONTENT_TYPE=FORM, HTTP_AUTHORIZATION=auth, HTTP_X_REQUEST_ID="lane-req-0001"
    )
    django_status, django_headers, django_body = _via_django(
        client, body=body, HTTP_AUTHORIZATION=auth
    )

    assert lane_status == django_status == 200
    assert _stable(lane_headers) == _stable(django_headers)
    assert lane_headers["X-Request-ID"] == "lane-req-0001"
    lane_payload, django_payload = json.loads(lane_body), json.loads(django_body)
    assert {k: v for k, v in lane_payload.items() if k != "access_token"} == {
        "token_type": "Bearer",
        "expires_in": 600,
        "scope": "orders:read",
    }
    assert lane_payload.keys() == django_payload.keys()
    assert IssuedToken.objects.count() == 2
    assert (
        AuditEvent.objects.filter(event_type="token.issued", request_id="lane-req-0001").count()
        == 1
    )


@pytest.mark.django_db
def test_a_disallowed_host_is_a_json_400_in_the_lane(signing_key):
    status, headers, body = _via_lane(body=b"grant_type=client_credentials", HTTP_HOST="evil.test")

    # The one intended difference: Django's stack answers an HTML 400 page.
    assert status == 400
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {
        "error": "invalid_request",
        "error_description": "The request was refused.",
    }


@pytest.mark.django_db
def test_an_unexpected_error_is_a_json_500_not_a_traceback(signing_key):
    def broken(request):
        raise RuntimeError("boom")

    status, headers, body = _via_lane(
        app=token_lane.TokenLane(broken), body=b"grant_type=client_credentials", CONTENT_TYPE=FORM
    )

    assert status == 500
    assert json.loads(body) == {"error": "server_error", "error_description": "Internal error."}
    assert "boom" not in body.decode()
    assert headers["Cache-Control"] == "no-store"


@pytest.mark.django_db
def test_a_refused_user_agent_is_a_json_403_in_the_lane(settings, signing_key):
    settings.DISALLOWED_USER_AGENTS = [re.compile(r"^BadBot")]

    status, _, body = _via_lane(body=b"", HTTP_USER_AGENT="BadBot/1.0")

    assert status == 403
    assert json.loads(body) == {
        "error": "invalid_request",
        "error_description": "The request was refused.",
    }


@pytest.mark.django_db
def test_an_http_token_request_is_redirected_to_https_as_djangos_stack_does(
    client, settings, signing_key, machine_factory
):
    registered = machine_factory()
    settings.SECURE_SSL_REDIRECT = True
    lane = token_lane.TokenLane()  # reads the setting when built, as the middleware does
    case = dict(
        body=b"grant_type=client_credentials",
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    lane_status, lane_headers, lane_body = _via_lane(app=lane, CONTENT_TYPE=FORM, **case)
    django_status, django_headers, django_body = _via_django(client, **case)

    assert (lane_status, lane_headers["Location"]) == (301, "https://testserver/oauth/token")
    assert (django_status, django_headers["Location"]) == (301, "https://testserver/oauth/token")
    assert lane_body == django_body == b""
    assert IssuedToken.objects.count() == 0
    assert AuditEvent.objects.filter(event_type="token.issued").count() == 0
    # Over HTTPS the same lane issues the token.
    secure_status, _, _ = _via_lane(
        app=lane, CONTENT_TYPE=FORM, **{"wsgi.url_scheme": "https", "SERVER_PORT": "443"}, **case
    )
    assert secure_status == 200


@pytest.mark.django_db
def test_introspection_answers_the_same_in_both_lanes(client, signing_key, machine_factory):
    holder = machine_factory(name="holder")
    gateway = machine_factory(name="gateway", scopes=("orders:read", "tokens:introspect"))
    token = json.loads(
        _via_django(
            client,
            body=b"grant_type=client_credentials",
            HTTP_AUTHORIZATION=basic(holder.client_id, holder.secret),
        )[2]
    )["access_token"]
    auth = basic(gateway.client_id, gateway.secret)
    cases = {
        "active": f"token={token}".encode(),
        "junk": b"token=not-a-token",
        "missing": b"token_type_hint=access_token",
    }
    for name, body in cases.items():
        lane = _via_lane(
            body=body, CONTENT_TYPE=FORM, HTTP_AUTHORIZATION=auth, PATH_INFO="/oauth/introspect"
        )
        django = client.post("/oauth/introspect", body, content_type=FORM, HTTP_AUTHORIZATION=auth)

        assert (name, lane[0], lane[2]) == (name, django.status_code, django.content)
        assert _stable(lane[1]) == _stable(dict(django.items())), name
    active = json.loads(
        _via_lane(
            body=cases["active"],
            CONTENT_TYPE=FORM,
            HTTP_AUTHORIZATION=auth,
            PATH_INFO="/oauth/introspect",
            HTTP_X_REQUEST_ID="lane-introspect-1",
        )[2]
    )
    assert (active["active"], active["client_id"]) == (True, holder.client_id)
    events = AuditEvent.objects.filter(event_type="token.introspected")
    assert events.count() == 5  # two lanes x (active, junk), plus the last request
    assert list(
        events.filter(request_id="lane-introspect-1").values_list("outcome", "target_id")
    ) == [("success", active["jti"])]


@pytest.mark.django_db
def test_over_https_both_lanes_send_the_same_security_headers_hsts_included(
    client, settings, signing_key, machine_factory
):
    registered = machine_factory()
    settings.SECURE_HSTS_SECONDS = 3600
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    lane = token_lane.TokenLane()  # reads the settings when built, as the middleware does
    case = dict(
        body=b"grant_type=client_credentials",
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    status, headers, _ = _via_lane(
        app=lane, CONTENT_TYPE=FORM, **{"wsgi.url_scheme": "https", "SERVER_PORT": "443"}, **case
    )
    django_status, django_headers, _ = _via_django(client, secure=True, **case)
    plain_status, plain_headers, _ = _via_lane(app=lane, CONTENT_TYPE=FORM, **case)

    assert status == django_status == plain_status == 200
    assert headers["Strict-Transport-Security"] == "max-age=3600; includeSubDomains"
    assert _stable(headers) == _stable(django_headers)
    assert "Strict-Transport-Security" not in plain_headers  # never over plain HTTP
    assert list(_stable(plain_headers)) == [
        "Content-Type",
        "Cache-Control",
        "Pragma",
        "X-Frame-Options",
        "Content-Security-Policy",
        "Permissions-Policy",
        "X-Content-Type-Options",
        "Referrer-Policy",
        "Cross-Origin-Opener-Policy",
    ]


def test_the_lane_leaves_a_header_the_view_set_and_honours_the_frame_exemption(signing_key):
    def framed(request):
        response = HttpResponse(b"{}", content_type="application/json")
        response["Referrer-Policy"] = "no-referrer"
        response.xframe_options_exempt = True
        return response

    status, headers, _ = _via_lane(
        app=token_lane.TokenLane(framed), body=b"grant_type=client_credentials", CONTENT_TYPE=FORM
    )

    assert status == 200
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "X-Frame-Options" not in headers
    assert headers["X-Content-Type-Options"] == "nosniff"
