"""Parsing client credentials (RFC 6749 2.3.1): every malformed shape is refused cleanly."""

import base64

import pytest
from django.test import RequestFactory

from clients.authentication import (
    ClientCredentials,
    client_credentials_from_request,
)
from core.errors import OAuthError

FORM = "application/x-www-form-urlencoded"


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode("ascii")


def _request(body: str = "grant_type=client_credentials", content_type: str = FORM, **extra):
    return RequestFactory().post("/oauth/token", data=body, content_type=content_type, **extra)


def test_basic_credentials_are_read_and_url_decoded():
    request = _request(HTTP_AUTHORIZATION=_basic(b"my%20client:s%3Acret+x"))

    credentials = client_credentials_from_request(request)

    assert credentials == ClientCredentials(
        client_id="my client", secret="s:cret x", method="client_secret_basic"
    )


def test_secret_may_contain_colons_after_the_first():
    request = _request(HTTP_AUTHORIZATION=_basic(b"cid:a:b"))

    assert client_credentials_from_request(request).secret == "a:b"


def test_form_credentials_are_read():
    request = _request("grant_type=client_credentials&client_id=cid&client_secret=sec")

    credentials = client_credentials_from_request(request)

    assert credentials == ClientCredentials(
        client_id="cid", secret="sec", method="client_secret_post"
    )


def test_basic_with_the_same_client_id_in_the_body_is_accepted():
    request = _request("client_id=cid", HTTP_AUTHORIZATION=_basic(b"cid:sec"))

    assert client_credentials_from_request(request).method == "client_secret_basic"


def test_repr_never_shows_the_secret():
    credentials = ClientCredentials(client_id="cid", secret="mip_cs_topsecret", method="x")

    assert "topsecret" not in repr(credentials)


@pytest.mark.parametrize(
    ("header", "error", "status"),
    [
        ("Basic %%%not-base64%%%", "invalid_request", 400),
        ("Basic " + base64.b64encode(b"no-colon-here").decode(), "invalid_request", 400),
        ("Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(), "invalid_request", 400),
        ("Basic " + base64.b64encode(b"cid\x00:sec").decode(), "invalid_request", 400),
        ("Basic " + base64.b64encode(b"cid:se\x00c").decode(), "invalid_request", 400),
        ("Basic " + base64.b64encode(b"cid%00:sec").decode(), "invalid_request", 400),
        ("Basic " + base64.b64encode(b"cid:%ff%fe").decode(), "invalid_request", 400),
        ("Basic " + "QUFB" * 4096, "invalid_request", 400),
        ("Basic " + base64.b64encode(b"c" * 300 + b":sec").decode(), "invalid_request", 400),
        ("Basic " + base64.b64encode(b":sec").decode(), "invalid_client", 401),
        ("Basic " + base64.b64encode(b"cid:").decode(), "invalid_client", 401),
        ("Basic", "invalid_request", 400),
        ("Bearer abc", "invalid_client", 401),
        ("Basic Y2lkOnPDqWM=", "invalid_request", 400),  # "cid:séc": not VSCHAR
    ],
)
def test_malformed_basic_header_is_refused(header, error, status):
    request = _request(HTTP_AUTHORIZATION=header)

    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)

    assert (raised.value.error, raised.value.status) == (error, status)
    assert raised.value.description


@pytest.mark.parametrize(
    ("body", "error", "status"),
    [
        ("client_id=a&client_id=b&client_secret=s", "invalid_request", 400),
        ("client_id=a&client_secret=s&client_secret=t", "invalid_request", 400),
        ("client_secret=s", "invalid_request", 400),
        ("client_id=a", "invalid_client", 401),
        ("client_id=a&client_secret=", "invalid_client", 401),
        ("", "invalid_client", 401),
        ("grant_type=client_credentials", "invalid_client", 401),
        ("client_id=a%00&client_secret=s", "invalid_request", 400),
        ("client_id=a&client_secret=%ff%fe", "invalid_request", 400),  # not UTF-8
        ("client_id=a&client_secret=s%0A", "invalid_request", 400),
        ("client_id=a&client_secret=" + "s" * 600, "invalid_request", 400),
    ],
)
def test_malformed_form_credentials_are_refused(body, error, status):
    request = _request(body)

    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)

    assert (raised.value.error, raised.value.status) == (error, status)


def test_basic_and_form_secret_together_are_refused():
    request = _request("client_id=cid&client_secret=sec", HTTP_AUTHORIZATION=_basic(b"cid:sec"))

    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)

    assert (raised.value.error, raised.value.status) == ("invalid_request", 400)


def test_basic_with_another_client_id_in_the_body_is_refused():
    request = _request("client_id=other", HTTP_AUTHORIZATION=_basic(b"cid:sec"))

    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)

    assert raised.value.error == "invalid_request"


def test_credentials_in_the_query_string_are_refused():
    request = RequestFactory().post(
        "/oauth/token?client_id=cid&client_secret=sec", data="", content_type=FORM
    )

    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)

    assert (raised.value.error, raised.value.status) == ("invalid_request", 400)


def test_json_body_carries_no_form_credentials():
    request = _request('{"client_id": "cid", "client_secret": "sec"}', "application/json")

    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)

    assert (raised.value.error, raised.value.status) == ("invalid_client", 401)


def test_too_many_fields_is_refused(settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    request = _request("&".join(f"f{i}=v" for i in range(20)))

    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)

    assert (raised.value.error, raised.value.status) == ("invalid_request", 400)


def test_broken_multipart_body_is_refused():
    request = _request("--x\r\ngarbage", "multipart/form-data; boundary=")

    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)

    assert (raised.value.error, raised.value.status) == ("invalid_request", 400)


def test_malformed_requests_change_nothing(machine_and_secret):
    from django.core.cache import cache

    from audit.models import AuditEvent
    from clients.models import ClientSecret, Machine
    from clients.throttling import throttle_keys

    machine, raw = machine_and_secret
    good = base64.b64encode(f"{machine.client_id}:{raw}".encode()).decode()
    before = (
        AuditEvent.objects.count(),
        list(Machine.objects.values()),
        list(ClientSecret.objects.values()),
    )
    cache.clear()
    requests = [
        _request(HTTP_AUTHORIZATION="Basic " + good[:-2] + "!!"),
        _request(HTTP_AUTHORIZATION="Basic " + good + "A" * 20000),
        _request(
            f"client_id={machine.client_id}&client_secret={raw}", HTTP_AUTHORIZATION="Basic " + good
        ),
        _request(
            f"client_id={machine.client_id}&client_id={machine.client_id}&client_secret={raw}"
        ),
        _request(""),
    ]

    for request in requests:
        with pytest.raises(OAuthError):
            client_credentials_from_request(request)

    after = (
        AuditEvent.objects.count(),
        list(Machine.objects.values()),
        list(ClientSecret.objects.values()),
    )
    assert after == before
    keys = throttle_keys(client_id=machine.client_id, ip="127.0.0.1")
    assert cache.get_many([*keys.blocks, keys.fail_pair, keys.fail_ip]) == {}


def test_a_form_parsed_by_the_caller_is_used_and_the_body_not_read_again():
    request = _request("client_id=from-body&client_secret=body-secret")
    parsed = {"client_id": ["from-form"], "client_secret": ["form-secret"]}

    credentials = client_credentials_from_request(request, parsed)

    assert credentials == ClientCredentials(
        client_id="from-form", secret="form-secret", method="client_secret_post"
    )
    assert not hasattr(request, "_post")  # Django never parsed the body


def test_a_repeated_client_id_in_the_parsed_form_is_refused():
    request = _request()
    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request, {"client_id": ["a", "b"], "client_secret": ["s"]})
    assert (raised.value.error, raised.value.status) == ("invalid_request", 400)
    assert raised.value.description == "a parameter is repeated"


def test_credentials_in_the_query_string_are_refused_with_a_parsed_form():
    request = RequestFactory().post(
        "/oauth/token?client_secret=leak", data="client_id=a", content_type=FORM
    )
    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request, {"client_id": ["a"]})
    assert raised.value.description == "client credentials are not accepted in the URL"
