"""Requests framed as the web server frames them: chunked bodies and HTTP/1.0 without Host.

RFC 9112 section 7.1: a recipient must parse chunked bodies, yet granian passes no
``CONTENT_LENGTH`` for them and Django then reads nothing; an HTTP/1.0 request may
omit ``Host`` (RFC 9112 section 3.2), and granian passes it as empty. Issue 11, item 4.
"""

from __future__ import annotations

import io
import json
import socket

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from identity_portal.served import application as served_application
from tests.tokens.helpers import FORM, basic, form_body, issue_token
from tokens.models import IssuedToken

pytestmark = pytest.mark.django_db


def _chunks(body: bytes) -> io.BytesIO:
    """What granian hands the application for a chunked body: the de-chunked bytes."""
    return io.BytesIO(body)


def _served(
    path: str, body: bytes | io.BytesIO, *, chunked: bool = True, **meta
) -> tuple[int, dict, bytes]:
    """One request through the application the web server loads, framed as granian frames it."""
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": FORM,
        "wsgi.url_scheme": "http",
        "wsgi.input": body if isinstance(body, io.BytesIO) else _chunks(body),
        **meta,
    }
    if chunked:
        # granian passes no CONTENT_LENGTH for a chunked body (RFC 9112 section 6.1).
        environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    else:
        environ["CONTENT_LENGTH"] = str(len(environ["wsgi.input"].getvalue()))
    captured = {}

    def start_response(status, headers, exc_info=None):
        captured["status"] = int(status.split(" ", 1)[0])
        captured["headers"] = dict(headers)

    # As Django's test client does: the test's transaction survives the request signals.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        result = served_application(environ, start_response)
        try:
            content = b"".join(result)
        finally:
            result.close()
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return captured["status"], captured["headers"], content


# --- chunked bodies (RFC 9112 section 7.1) ---------------------------------------


def test_a_chunked_token_request_is_read(signing_key, machine_factory):
    registered = machine_factory()

    status, _, content = _served(
        "/oauth/token",
        form_body(grant_type="client_credentials", scope="orders:read"),
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert status == 200, content
    assert json.loads(content)["scope"] == "orders:read"
    assert IssuedToken.objects.count() == 1


def test_chunked_introspection_and_revocation_are_read(
    client, signing_key, machine_factory, introspector
):
    owner = machine_factory(name="owner")
    token = issue_token(client, owner)
    introspect = form_body(token=token)
    as_introspector = basic(introspector.client_id, introspector.secret)

    before = _served("/oauth/introspect", introspect, HTTP_AUTHORIZATION=as_introspector)
    revoked = _served(
        "/oauth/revoke",
        form_body(token=token),
        HTTP_AUTHORIZATION=basic(owner.client_id, owner.secret),
    )
    after = _served("/oauth/introspect", introspect, HTTP_AUTHORIZATION=as_introspector)

    assert before[0] == 200 and json.loads(before[2])["active"] is True
    assert (revoked[0], revoked[2]) == (200, b"")
    assert IssuedToken.objects.get().revoked_at is not None
    assert (after[0], json.loads(after[2])) == (200, {"active": False})


def test_a_chunked_body_over_the_bound_is_refused_unread(signing_key, machine_factory, settings):
    registered = machine_factory()
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    stream = _chunks(form_body(grant_type="client_credentials", pad="a" * (3 * limit)))

    status, _, content = _served(
        "/oauth/token", stream, HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret)
    )

    assert (status, json.loads(content)) == (
        400,
        {"error": "invalid_request", "error_description": "The body is too large."},
    )
    # Read one byte past the bound, never the whole body into memory.
    assert stream.tell() == limit + 1
    assert IssuedToken.objects.count() == 0


def test_a_body_with_content_length_is_left_as_the_server_framed_it(signing_key, machine_factory):
    registered = machine_factory()

    status, _, _ = _served(
        "/oauth/token",
        form_body(grant_type="client_credentials"),
        chunked=False,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert status == 200


# --- Host (RFC 9112 section 3.2) --------------------------------------------------


def test_an_http10_request_without_host_is_answered_for_the_issuer(signing_key, machine_factory):
    registered = machine_factory()

    # granian: SERVER_PROTOCOL "HTTP/1" and an empty Host for an HTTP/1.0 request without one.
    status, _, content = _served(
        "/oauth/token",
        form_body(grant_type="client_credentials"),
        chunked=False,
        SERVER_PROTOCOL="HTTP/1",
        HTTP_HOST="",
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert status == 200, content
    assert IssuedToken.objects.count() == 1


def test_an_http11_request_without_host_is_still_refused(signing_key, machine_factory):
    registered = machine_factory()

    status, _, content = _served(
        "/oauth/token",
        form_body(grant_type="client_credentials"),
        chunked=False,
        HTTP_HOST="",
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert (status, json.loads(content)["error"]) == (400, "invalid_request")
    assert IssuedToken.objects.count() == 0


def _raw_exchange(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_real_server_reads_a_chunked_revocation_and_answers_http10_without_host(
    signing_key, machine_factory, tmp_path
):
    """granian, the served application and PostgreSQL: the two framings as a client sends them."""
    from tests.fixtures.celery_worker import _database_url
    from tests.identity_portal.test_web_server import _running_server

    owner = machine_factory()
    environment = {
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings_test",
        "DATABASE_URL": _database_url(),
    }
    with _running_server(tmp_path, **environment) as port:
        token_body = b"grant_type=client_credentials"
        issued = _raw_exchange(
            port,
            b"POST /oauth/token HTTP/1.0\r\n"
            + f"Authorization: {basic(owner.client_id, owner.secret)}\r\n".encode()
            + f"Content-Type: {FORM}\r\nContent-Length: {len(token_body)}\r\n\r\n".encode()
            + token_body,
        )
        head, _, content = issued.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 "), issued
        token = json.loads(content)["access_token"]
        revoke_body = form_body(token=token)
        chunked = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part) for part in (revoke_body[:10], revoke_body[10:])
        )
        revoked = _raw_exchange(
            port,
            b"POST /oauth/revoke HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + f"Authorization: {basic(owner.client_id, owner.secret)}\r\n".encode()
            + f"Content-Type: {FORM}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + chunked
            + b"0\r\n\r\n",
        )

    assert revoked.startswith(b"HTTP/1.1 200 "), revoked
    assert IssuedToken.objects.get().revoked_at is not None
