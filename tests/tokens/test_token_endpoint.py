import base64
import json
import time

import pytest

from audit.models import AuditEvent
from tests.fixtures.tokens import API, OTHER_API
from tests.tokens.helpers import FORM, basic, token_request, verify
from tokens.models import IssuedToken

pytestmark = pytest.mark.django_db


def test_client_credentials_with_basic_returns_an_rfc9068_access_token(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    before = int(time.time())

    response = token_request(client, registered)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert response["Pragma"] == "no-cache"
    body = json.loads(response.content)
    assert sorted(body) == ["access_token", "expires_in", "scope", "token_type"]
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 600
    assert body["scope"] == "orders:read"
    claims = verify(body["access_token"], audience=API)
    assert sorted(claims) == ["aud", "client_id", "exp", "iat", "iss", "jti", "scope", "sub"]
    assert claims["sub"] == str(registered.machine.subject)
    assert claims["client_id"] == registered.client_id
    assert claims["scope"] == "orders:read"
    assert claims["exp"] - claims["iat"] == 600
    assert claims["iat"] >= before
    assert len(claims["jti"]) >= 22
    record = IssuedToken.objects.get()
    assert (record.jti, record.audience, record.scope, record.signing_key_id) == (
        claims["jti"],
        API,
        "orders:read",
        signing_key.kid,
    )


def test_trailing_slash_and_form_credentials_work_too(client, signing_key, machine_factory):
    registered = machine_factory()

    response = client.post(
        "/oauth/token/",
        data=f"grant_type=client_credentials&client_id={registered.client_id}"
        f"&client_secret={registered.secret}&scope=orders:write%20orders:read",
        content_type=FORM,
    )

    assert response.status_code == 200
    assert json.loads(response.content)["scope"] == "orders:read orders:write"


def test_resource_selects_the_audience_and_openid_adds_an_id_token(
    client, signing_key, machine_factory
):
    registered = machine_factory(name="ledger")

    response = token_request(client, registered, scope="openid orders:read", resource=OTHER_API)

    body = json.loads(response.content)
    assert response.status_code == 200
    assert verify(body["access_token"], audience=OTHER_API)["aud"] == OTHER_API
    id_claims = verify(body["id_token"], audience=registered.client_id, typ="JWT")
    assert id_claims["sub"] == str(registered.machine.subject)
    assert id_claims["name"] == "ledger"
    assert id_claims["owner_team"] == "platform"
    assert id_claims["owner_email"] == "platform@example.test"
    assert "refresh_token" not in body


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"resource": "https://evil.example.test"}, "invalid_target"),
        ({"resource": "not a uri"}, "invalid_target"),
        ({"resource": "https://orders.example.test#frag"}, "invalid_target"),
        ({"resource": "http://[::1"}, "invalid_target"),
        ({"scope": "admin:all"}, "invalid_scope"),
        ({"scope": 'orders:read "quoted"'}, "invalid_scope"),
    ],
)
def test_refused_scope_or_target_answers_the_rfc_error_and_issues_nothing(
    client, signing_key, machine_factory, params, error
):
    registered = machine_factory()

    response = token_request(client, registered, **params)

    assert response.status_code == 400
    assert json.loads(response.content)["error"] == error
    assert IssuedToken.objects.count() == 0
    assert not AuditEvent.objects.filter(event_type="token.issued").exists()


def test_a_denied_scope_is_audited_without_secret(client, signing_key, machine_factory):
    registered = machine_factory()

    token_request(client, registered, scope="admin:all")

    event = AuditEvent.objects.get(event_type="token.denied")
    assert (event.outcome, event.reason, event.actor_id) == (
        "failure",
        "invalid_scope",
        registered.client_id,
    )
    assert registered.secret not in json.dumps(event.details)


def test_unknown_client_and_wrong_secret_are_indistinguishable(
    client, signing_key, machine_factory
):
    registered = machine_factory()

    wrong = client.post(
        "/oauth/token",
        data="grant_type=client_credentials",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret + "x"),
    )
    unknown = client.post(
        "/oauth/token",
        data="grant_type=client_credentials",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic("nobody", registered.secret),
    )
    form = client.post(
        "/oauth/token",
        data="grant_type=client_credentials&client_id=nobody&client_secret=nope",
        content_type=FORM,
    )

    assert wrong.status_code == unknown.status_code == form.status_code == 401
    assert wrong.content == unknown.content == form.content
    assert json.loads(wrong.content)["error"] == "invalid_client"
    assert wrong["WWW-Authenticate"] == unknown["WWW-Authenticate"] == form["WWW-Authenticate"]
    assert wrong["WWW-Authenticate"].startswith("Basic realm=")
    assert IssuedToken.objects.count() == 0


def test_a_disabled_machine_gets_invalid_client(client, signing_key, machine_factory):
    registered = machine_factory(enabled=False)

    response = token_request(client, registered)

    assert response.status_code == 401
    assert json.loads(response.content)["error"] == "invalid_client"
    assert IssuedToken.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("", "invalid_request"),
        ("scope=orders:read", "invalid_request"),
        ("grant_type=password&username=a&password=b", "unsupported_grant_type"),
        ("grant_type=authorization_code&code=x", "unsupported_grant_type"),
        ("grant_type=client_credentials&grant_type=client_credentials", "invalid_request"),
        ("grant_type=client_credentials&scope=a&scope=b", "invalid_request"),
        ("grant_type=client_credentials&scope=%FF%FE", "invalid_request"),
        ("grant_type=client_credentials&scope=a%00b", "invalid_request"),
    ],
)
def test_malformed_bodies_are_refused_before_anything_happens(
    client, signing_key, machine_factory, body, error
):
    registered = machine_factory()

    response = client.post(
        "/oauth/token",
        data=body,
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert response.status_code == 400
    assert json.loads(response.content)["error"] == error
    assert IssuedToken.objects.count() == 0
    assert AuditEvent.objects.filter(event_type__startswith="token.").count() == 0


def _raw_basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode("ascii")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"HTTP_AUTHORIZATION": "Basic %%%not-base64%%%"},
        {"HTTP_AUTHORIZATION": _raw_basic(b"no-colon-here")},
        {"HTTP_AUTHORIZATION": _raw_basic(b"\xff\xfe:\xfd")},
        {"HTTP_AUTHORIZATION": _raw_basic(b"client\x00id:secret")},
        {"HTTP_AUTHORIZATION": "Basic " + "A" * 16384},
        {"HTTP_AUTHORIZATION": "Bearer abc"},
        {"HTTP_AUTHORIZATION": ""},
        {"content_type": "application/json", "data": '{"grant_type": "client_credentials"}'},
        {"content_type": "text/plain", "data": "grant_type=client_credentials"},
        {"content_type": FORM + "; charset=latin-1", "data": "grant_type=client_credentials"},
        {"content_type": FORM, "data": b"grant_type=client_credentials&scope=\xff"},
        {"content_type": FORM, "data": "grant_type=client_credentials&x=" + "a" * 9000},
        {"content_type": "multipart/form-data; boundary=zz", "data": "--zz\r\n"},
    ],
)
def test_bad_input_of_any_shape_gets_a_4xx_json_error_and_changes_nothing(
    client, signing_key, machine_factory, kwargs
):
    registered = machine_factory()
    kwargs = {
        "content_type": FORM,
        "data": "grant_type=client_credentials",
        "HTTP_AUTHORIZATION": basic(registered.client_id, registered.secret),
        **kwargs,
    }

    response = client.post("/oauth/token", **kwargs)

    assert 400 <= response.status_code < 500
    assert json.loads(response.content)["error"] in {"invalid_request", "invalid_client"}
    assert IssuedToken.objects.count() == 0


def test_basic_and_form_credentials_together_are_refused(client, signing_key, machine_factory):
    registered = machine_factory()

    response = client.post(
        "/oauth/token",
        data=f"grant_type=client_credentials&client_id={registered.client_id}"
        f"&client_secret={registered.secret}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )

    assert response.status_code == 400
    assert json.loads(response.content)["error"] == "invalid_request"
    assert IssuedToken.objects.count() == 0


def test_only_post_is_accepted(client, signing_key):
    response = client.get("/oauth/token")

    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert json.loads(response.content)["error"] == "invalid_request"


def test_repeated_failures_are_throttled_with_retry_after(client, signing_key, machine_factory):
    registered = machine_factory()
    statuses = []
    for _ in range(8):
        response = client.post(
            "/oauth/token",
            data="grant_type=client_credentials",
            content_type=FORM,
            HTTP_AUTHORIZATION=basic(registered.client_id, "wrong"),
        )
        statuses.append(response.status_code)

    assert statuses[0] == 401
    assert statuses[-1] == 429
    assert int(response["Retry-After"]) >= 1
    assert json.loads(response.content)["error"] == "slow_down"


def test_without_an_active_key_the_endpoint_answers_503_not_500(client, machine_factory):
    registered = machine_factory()

    response = token_request(client, registered)

    assert response.status_code == 503
    assert json.loads(response.content)["error"] == "temporarily_unavailable"
    assert IssuedToken.objects.count() == 0


def test_issued_event_carries_jti_scopes_audience_expiry_but_no_token(
    client, signing_key, machine_factory
):
    registered = machine_factory()

    body = json.loads(token_request(client, registered, scope="openid orders:read").content)

    event = AuditEvent.objects.get(event_type="token.issued")
    record = IssuedToken.objects.get()
    assert event.details == {
        "jti": record.jti,
        "scopes": ["openid", "orders:read"],
        "audience": API,
        "expires_at": record.expires_at.isoformat(),
        "kid": signing_key.kid,
        "alg": "ES256",
        "openid": True,
    }
    assert (event.actor_kind, event.actor_id, event.target_id) == (
        "machine",
        registered.client_id,
        record.jti,
    )
    stored = json.dumps(
        [event.details, event.actor_display, event.target_display, event.user_agent]
    )
    for value in (body["access_token"], body["id_token"], registered.secret):
        assert value not in stored
    assert record.checksum != body["access_token"]


def test_a_hostile_user_agent_is_recorded_safely_and_the_token_issued(
    client, signing_key, machine_factory
):
    registered = machine_factory()

    response = client.post(
        "/oauth/token",
        data="grant_type=client_credentials",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
        HTTP_USER_AGENT="bot\x00" + "é" * 600,
    )

    assert response.status_code == 200
    event = AuditEvent.objects.get(event_type="token.issued")
    assert event.user_agent.startswith("bot\ufffdé")
    assert len(event.user_agent) == 512


def test_an_empty_parameter_counts_as_omitted(client, signing_key, machine_factory):
    """RFC 6749 section 3.1: a parameter sent without a value is treated as omitted."""
    registered = machine_factory()

    with_basic = client.post(
        "/oauth/token",
        data="grant_type=client_credentials&client_secret=&client_id=",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
    )
    no_client_id = client.post(
        "/oauth/token",
        data=f"grant_type=client_credentials&client_id=&client_secret={registered.secret}",
        content_type=FORM,
    )

    assert with_basic.status_code == 200
    assert no_client_id.status_code == 400
    assert json.loads(no_client_id.content) == {
        "error": "invalid_request",
        "error_description": "client_id is required",
    }
    assert IssuedToken.objects.count() == 1


@pytest.mark.parametrize(
    ("peer", "recorded"),
    [
        ("/run/portal.sock", None),  # a unix socket peer is no address
        ("fe80::1%eth0", None),  # a zoned IPv6 address, which inet refuses
        ("not an address", None),
        ("2001:db8::7", "2001:db8::7"),
        ("2001:DB8:0:0::7", "2001:db8::7"),  # stored in its canonical form
        ("::ffff:192.0.2.1", "::ffff:192.0.2.1"),
        ("192.0.2.1", "192.0.2.1"),
    ],
)
def test_a_peer_that_is_no_storable_address_is_recorded_as_none_and_the_token_issued(
    client, signing_key, machine_factory, peer, recorded
):
    registered = machine_factory()

    response = client.post(
        "/oauth/token",
        data="grant_type=client_credentials",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, registered.secret),
        REMOTE_ADDR=peer,
    )

    assert response.status_code == 200
    event = AuditEvent.objects.get(event_type="token.issued")
    assert event.source_ip == recorded
