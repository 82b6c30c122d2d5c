import re

import pytest

pytestmark = pytest.mark.django_db


def test_well_formed_request_id_is_echoed(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="trace-0123456789")

    assert response["X-Request-ID"] == "trace-0123456789"


@pytest.mark.parametrize(
    "offered",
    ["short", "has space in it", "line\nbreak-injected", "x" * 129, "ünïcode-value"],
)
def test_malformed_request_id_is_replaced(client, offered):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=offered)

    assert response["X-Request-ID"] != offered
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-ID"])


def test_missing_request_id_is_generated(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]

    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


def test_a_long_path_is_logged_bounded():
    from identity_portal.middleware import MAX_LOGGED_PATH, loggable_path

    path = "/" + "a" * 10_000 + "\n"
    logged = loggable_path(path)

    assert logged == "/" + "a" * (MAX_LOGGED_PATH - 1) + "...[truncated]"
    assert loggable_path("/oauth/token\n") == "/oauth/token\\x0a"
