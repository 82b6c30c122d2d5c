"""Client authentication and secrets: checks pinned by the mutation run (`make mutate`).

Each test here kills mutants that survived the rest of the suite: the usable-secret
predicate at its edges, the denial event's exact actor and target, exception
messages that must never carry the failure reason, and every refusal of malformed
credentials with its exact error, description and status (the description is
what the client reads), each length bound at its edge.
"""

import base64
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.test import RequestFactory
from redis.exceptions import ConnectionError as RedisConnectionError

from audit.choices import EventType
from audit.context import Actor
from audit.models import AuditEvent
from clients.auth_methods.client_secret import last_used_flush
from clients.authentication import (
    ClientAuthError,
    ClientCredentials,
    client_authenticate,
    client_credentials_from_request,
)
from clients.client_assertion import (
    JWT_BEARER,
    MAX_ASSERTION_LENGTH,
    ClientAssertion,
    assertion_header_check,
    client_assertion_read,
)
from clients.constants import (
    AUTHORIZATION_HEADER_MAX_LENGTH,
    LAST_USED_FLUSH_INTERVAL,
    LAST_USED_WRITE_INTERVAL,
)
from clients.credentials import UnknownPepper, secret_digest, secret_is_usable
from clients.models import ClientSecret
from clients.services import machine_register, secret_create, secret_rotate
from core import jose
from core.errors import InvalidRequest, OAuthError, SlowDown

FORM = "application/x-www-form-urlencoded"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
DENIAL_FIELDS = (
    "actor_kind",
    "actor_id",
    "actor_display",
    "target_kind",
    "target_id",
    "target_display",
    "outcome",
    "reason",
    "details",
)


def _usable(**overrides) -> bool:
    values = {
        "created_at": NOW - timedelta(seconds=10),
        "expires_at": None,
        "revoked_at": None,
        "max_secret_age": None,
        "now": NOW,
    }
    values.update(overrides)
    return secret_is_usable(**values)


@pytest.mark.parametrize(
    ("overrides", "usable"),
    [
        ({}, True),
        ({"revoked_at": NOW - timedelta(seconds=1)}, False),
        # Revoked wins even when the secret would otherwise be usable for a long time.
        ({"revoked_at": NOW, "expires_at": NOW + timedelta(days=1)}, False),
        ({"expires_at": NOW + timedelta(seconds=1)}, True),
        ({"expires_at": NOW}, False),  # expires at this instant: no longer usable
        ({"expires_at": NOW - timedelta(seconds=1)}, False),
        ({"max_secret_age": 60}, True),  # created 10 s ago, may live 60 s
        ({"max_secret_age": 10}, False),  # created exactly max_secret_age ago
        ({"max_secret_age": 9}, False),
        # The earlier of its own expiry and the machine's maximum age applies.
        ({"max_secret_age": 5, "expires_at": NOW + timedelta(days=1)}, False),
        ({"max_secret_age": 3600, "expires_at": NOW - timedelta(seconds=1)}, False),
    ],
)
def test_secret_is_usable_at_its_edges(overrides, usable):
    assert _usable(**overrides) is usable


def test_the_failure_message_never_names_the_reason():
    error = ClientAuthError(reason="wrong_secret")

    assert str(error) == "Client authentication failed."
    assert error.args == ("Client authentication failed.",)
    assert (error.error, error.status, error.reason) == ("invalid_client", 401, "wrong_secret")


def test_a_refusal_and_a_throttle_carry_their_values():
    refused = InvalidRequest("a parameter is repeated")
    throttled = SlowDown("Too many requests; retry later.", retry_after=7)

    assert str(refused) == "a parameter is repeated"
    assert (refused.error, refused.status) == ("invalid_request", 400)
    assert (throttled.error, throttled.status, throttled.retry_after) == ("slow_down", 429, 7)


def _denials():
    return list(
        AuditEvent.objects.filter(event_type=EventType.TOKEN_DENIED)
        .order_by("id")
        .values_list(*DENIAL_FIELDS)
    )


def test_an_unknown_clients_denial_names_it_truncated_as_actor_and_target(db, request_ctx):
    client_id = "u" * 200  # within the 255 accepted, longer than the 128 recorded

    with pytest.raises(ClientAuthError):
        client_authenticate(
            credentials=ClientCredentials(
                client_id=client_id, secret="whatever", method="client_secret_post"
            ),
            context=request_ctx,
        )

    recorded = "u" * 128
    assert _denials() == [
        (
            "anonymous",
            recorded,
            recorded,
            "machine",
            recorded,
            recorded,
            "failure",
            "unknown_client",
            {"method": "client_secret_post"},
        )
    ]


def test_a_known_machines_denial_names_the_machine_as_actor_and_target(
    machine_and_secret, request_ctx
):
    machine, raw = machine_and_secret

    with pytest.raises(ClientAuthError):
        client_authenticate(
            credentials=ClientCredentials(
                client_id=machine.client_id, secret=raw + "x", method="client_secret_basic"
            ),
            context=request_ctx,
        )

    assert _denials() == [
        (
            "machine",
            machine.client_id,
            "billing-job",
            "machine",
            machine.client_id,
            "billing-job",
            "failure",
            "wrong_secret",
            {"method": "client_secret_basic"},
        )
    ]


# --- reading the credentials: each refusal with its exact RFC 6749 5.2 error --------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _request(body: str = "grant_type=client_credentials", path: str = "/oauth/token", **extra):
    return RequestFactory().post(path, data=body, content_type=FORM, **extra)


def _refusal(request) -> tuple[str, str, int]:
    with pytest.raises(OAuthError) as raised:
        client_credentials_from_request(request)
    error = raised.value
    return (error.error, error.description, error.status)


TOO_LONG = ("invalid_request", "client credentials are too long", 400)
NOT_ASCII = ("invalid_request", "client credentials must be printable ASCII", 400)
MALFORMED_BASIC = ("invalid_request", "malformed Basic credentials", 400)
REQUIRED_BASIC = ("invalid_client", "client authentication required", 401)


@pytest.mark.parametrize(
    ("header", "refusal"),
    [
        ("Bearer abc", ("invalid_client", "use HTTP Basic authentication", 401)),
        # A character outside the base64 alphabet is refused, not skipped ("cid:sec" otherwise).
        ("Basic Y2lk*OnNlYw==", MALFORMED_BASIC),
        ("Basic " + _b64(b"\xff\xfe:\xff"), MALFORMED_BASIC),  # not UTF-8
        ("Basic " + _b64(b"no-colon-here"), MALFORMED_BASIC),
        # Percent-escapes that are not UTF-8 are refused, not replaced.
        ("Basic " + _b64(b"cid:%ff%fe"), MALFORMED_BASIC),
        ("Basic " + _b64(b"%ff:sec"), MALFORMED_BASIC),
        ("Basic " + _b64(b"c" * 256 + b":sec"), TOO_LONG),
        ("Basic " + _b64(b"cid:" + b"s" * 513), TOO_LONG),
        ("Basic " + _b64(b"cid\x00:sec"), NOT_ASCII),
        ("Basic " + _b64(b"cid:s\x7fc"), NOT_ASCII),
        ("Basic " + _b64(b":sec"), REQUIRED_BASIC),
        ("Basic " + _b64(b"cid:"), REQUIRED_BASIC),
    ],
)
def test_a_malformed_basic_header_gets_its_exact_error(header, refusal):
    assert _refusal(_request(HTTP_AUTHORIZATION=header)) == refusal


def test_credentials_at_their_length_limits_are_read():
    client_id, secret = "c" * 255, "s" * 512
    request = _request(HTTP_AUTHORIZATION="Basic " + _b64(f"{client_id}:{secret}".encode()))

    assert client_credentials_from_request(request) == ClientCredentials(
        client_id=client_id, secret=secret, method="client_secret_basic"
    )


def test_the_authorization_header_bound_admits_exactly_its_maximum():
    # Trailing blanks count towards the header's length and are stripped before decoding.
    header = "Basic " + _b64(b"cid:" + b"s" * 600)
    at_limit = header.ljust(AUTHORIZATION_HEADER_MAX_LENGTH)
    over = header.ljust(AUTHORIZATION_HEADER_MAX_LENGTH + 1)

    assert _refusal(_request(HTTP_AUTHORIZATION=at_limit)) == TOO_LONG
    assert _refusal(_request(HTTP_AUTHORIZATION=over)) == (
        "invalid_request",
        "Authorization header too large",
        400,
    )


@pytest.mark.parametrize(
    ("body", "extra", "refusal"),
    [
        (
            "client_id=a&client_id=b&client_secret=s",
            {},
            ("invalid_request", "a parameter is repeated", 400),
        ),
        (
            "client_id=cid&client_secret=sec",
            {"HTTP_AUTHORIZATION": "Basic " + _b64(b"cid:sec")},
            ("invalid_request", "use one client authentication method, not two", 400),
        ),
        (
            "client_id=other",
            {"HTTP_AUTHORIZATION": "Basic " + _b64(b"cid:sec")},
            ("invalid_request", "client_id differs from the Basic credentials", 400),
        ),
        ("", {}, ("invalid_client", "client authentication required", 401)),
        ("client_secret=s", {}, ("invalid_request", "client_id is required", 400)),
        ("client_id=a", {}, ("invalid_client", "client authentication required", 401)),
        (
            "client_assertion=a.b.c",
            {},
            ("invalid_request", "client_assertion and client_assertion_type go together", 400),
        ),
        (
            "client_assertion=a.b.c&client_assertion_type=urn%3Aexample%3Aother",
            {},
            ("invalid_client", "unsupported client_assertion_type", 401),
        ),
        (
            "client_id=a&client_secret=" + "s" * 513,
            {},
            ("invalid_request", "client credentials are too long", 400),
        ),
    ],
)
def test_malformed_form_credentials_get_their_exact_error(body, extra, refusal):
    assert _refusal(_request(body, **extra)) == refusal


def test_credentials_in_the_url_get_their_exact_error():
    request = _request("", path="/oauth/token?client_id=cid&client_secret=sec")

    assert _refusal(request) == (
        "invalid_request",
        "client credentials are not accepted in the URL",
        400,
    )


def test_an_unrelated_query_parameter_does_not_refuse_the_credentials():
    request = _request(path="/oauth/token?trace=1", HTTP_AUTHORIZATION="Basic " + _b64(b"cid:sec"))

    assert client_credentials_from_request(request) == ClientCredentials(
        client_id="cid", secret="sec", method="client_secret_basic"
    )


def test_an_assertion_type_in_the_url_is_not_a_credential():
    # client_assertion_type names a method and proves nothing: in the URL it is ignored.
    request = _request(
        path="/oauth/token?client_assertion_type=x", HTTP_AUTHORIZATION="Basic " + _b64(b"cid:sec")
    )

    assert client_credentials_from_request(request) == ClientCredentials(
        client_id="cid", secret="sec", method="client_secret_basic"
    )


@pytest.mark.parametrize(
    ("client_id", "refusal"),
    [
        ("c" * 1000, TOO_LONG),
        ("cid\u00e9", NOT_ASCII),
        ("cid", ("invalid_client", "client authentication required", 401)),
    ],
)
def test_a_client_id_alone_is_checked_before_authentication_is_asked_for(client_id, refusal):
    from urllib.parse import urlencode

    request = _request(urlencode({"grant_type": "client_credentials", "client_id": client_id}))

    assert _refusal(request) == refusal


def test_credentials_in_the_url_are_refused_even_without_the_secret():
    request = _request("client_secret=sec", path="/oauth/token?client_id=cid")

    assert _refusal(request) == (
        "invalid_request",
        "client credentials are not accepted in the URL",
        400,
    )


def test_a_body_that_cannot_be_parsed_gets_its_exact_error(settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10

    assert _refusal(_request("&".join(f"f{i}=v" for i in range(20)))) == (
        "invalid_request",
        "request body refused",
        400,
    )


def test_a_digest_under_a_retired_pepper_names_the_pepper():
    with pytest.raises(UnknownPepper) as raised:
        secret_digest(secret="mip_cs_x", client_id="m", pepper_id="retired")

    assert raised.value.args == ("retired",)


# Secrets are tried newest first: the retired one is tried before the valid one when newer.
@pytest.mark.parametrize("retired_is_newer", [True, False])
def test_a_secret_under_a_retired_pepper_does_not_hide_the_valid_one(
    machine_and_secret, request_ctx, retired_is_newer
):
    machine, raw = machine_and_secret
    valid = ClientSecret.objects.get(machine=machine)
    offset = timedelta(seconds=1 if retired_is_newer else -1)
    ClientSecret.objects.create(
        machine=machine,
        digest="0" * 64,
        pepper_id="retired",
        display_prefix=valid.display_prefix,
        last_four="0000",
        created_at=valid.created_at + offset,
    )

    found = client_authenticate(
        credentials=ClientCredentials(
            client_id=machine.client_id, secret=raw, method="client_secret_basic"
        ),
        context=request_ctx,
    ).machine

    assert found.pk == machine.pk


def test_last_used_is_written_again_after_the_interval_and_per_secret(
    machine_and_secret, request_ctx, time_machine, settings
):
    # A process-local cache, whose expiry follows the moved clock (Redis expires
    # keys in its own real time, which time-machine cannot move).
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    machine, raw = machine_and_secret
    other, other_raw = machine_register(
        actor=Actor.cli("pytest"),
        name="other-job",
        scopes=["read"],
        audiences=["https://api.example"],
    )
    start = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    later = start + timedelta(seconds=LAST_USED_WRITE_INTERVAL + 1)

    def authenticate(client_id, secret):
        client_authenticate(
            credentials=ClientCredentials(
                client_id=client_id, secret=secret, method="client_secret_basic"
            ),
            context=request_ctx,
        )

    time_machine.move_to(start, tick=False)
    authenticate(machine.client_id, raw)
    authenticate(other.client_id, other_raw)
    time_machine.move_to(later, tick=False)
    authenticate(machine.client_id, raw)

    used = {
        secret.machine.name: secret.last_used_at
        for secret in ClientSecret.objects.select_related("machine")
    }
    assert used == {"billing-job": later, "other-job": start}


def test_a_denial_while_the_cache_is_down_claims_no_throttling(
    machine_and_secret, request_ctx, monkeypatch
):
    machine, raw = machine_and_secret

    def cache_down(**kwargs):
        raise RedisConnectionError("down")

    monkeypatch.setattr("clients.authentication.throttle_failure_record", cache_down)
    with pytest.raises(ClientAuthError):
        client_authenticate(
            credentials=ClientCredentials(
                client_id=machine.client_id, secret=raw + "x", method="client_secret_post"
            ),
            context=request_ctx,
        )

    assert [row[-2:] for row in _denials()] == [("wrong_secret", {"method": "client_secret_post"})]


def _outcome(client_id, secret, request_ctx) -> str:
    try:
        client_authenticate(
            credentials=ClientCredentials(
                client_id=client_id, secret=secret, method="client_secret_basic"
            ),
            context=request_ctx,
        )
    except ClientAuthError as refused:
        return refused.reason
    return "ok"


def test_a_secret_in_its_grace_works_until_the_instant_it_expires(
    machine_and_secret, request_ctx, time_machine
):
    machine, previous = machine_and_secret
    time_machine.move_to(NOW, tick=False)
    secret_rotate(actor=Actor.cli("pytest"), machine=machine, grace=60)

    outcomes = []
    for seconds in (59, 60):
        time_machine.move_to(NOW + timedelta(seconds=seconds), tick=False)
        outcomes.append(_outcome(machine.client_id, previous, request_ctx))

    assert outcomes == ["ok", "secret_expired"]


def test_a_not_before_secret_works_from_its_instant_and_not_a_second_earlier(
    machine_and_secret, request_ctx, time_machine
):
    machine, _ = machine_and_secret
    time_machine.move_to(NOW, tick=False)
    _, bootstrap = secret_create(
        actor=Actor.cli("pytest"), machine=machine, not_before=NOW + timedelta(seconds=60)
    )

    outcomes = []
    for seconds in (59, 60):
        time_machine.move_to(NOW + timedelta(seconds=seconds), tick=False)
        outcomes.append(_outcome(machine.client_id, bootstrap, request_ctx))

    assert outcomes == ["secret_not_yet_valid", "ok"]


def test_uses_are_written_from_the_instant_the_flush_interval_has_passed(
    machine_and_secret, request_ctx, time_machine
):
    machine, raw = machine_and_secret
    other, other_raw = machine_register(
        actor=Actor.cli("pytest"),
        name="other-job",
        scopes=["read"],
        audiences=["https://api.example"],
    )
    time_machine.move_to(NOW, tick=False)
    _outcome(machine.client_id, raw, request_ctx)  # written at once: nothing written before
    later = NOW + timedelta(seconds=LAST_USED_FLUSH_INTERVAL)
    time_machine.move_to(later, tick=False)
    _outcome(other.client_id, other_raw, request_ctx)

    used = {
        secret.machine.name: secret.last_used_at
        for secret in ClientSecret.objects.select_related("machine")
    }
    assert used == {"billing-job": NOW, "other-job": later}


def test_a_batch_gives_a_machine_the_time_and_address_of_its_latest_use(
    machine_and_secret, monkeypatch
):
    # In a zone other than UTC, so that a naive local time would be stored hours off.
    import time

    machine, _ = machine_and_secret
    second, _ = secret_create(actor=Actor.cli("pytest"), machine=machine)
    first = ClientSecret.objects.filter(machine=machine).exclude(pk=second.pk).get()
    earlier, later = NOW.timestamp(), NOW.timestamp() + 5
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        for pending in (
            {
                first.pk: (machine.pk, "192.0.2.1", earlier),
                second.pk: (machine.pk, "192.0.2.2", later),
            },
            {
                second.pk: (machine.pk, "192.0.2.2", later),
                first.pk: (machine.pk, "192.0.2.1", earlier),
            },
        ):
            last_used_flush(pending)
            machine.refresh_from_db()

            assert (machine.last_used_at, machine.last_used_ip) == (
                NOW + timedelta(seconds=5),
                "192.0.2.2",
            )
            assert {
                secret.pk: secret.last_used_at
                for secret in ClientSecret.objects.filter(machine=machine)
            } == {first.pk: NOW, second.pk: NOW + timedelta(seconds=5)}
    finally:
        monkeypatch.undo()
        time.tzset()


def _assertion_form(raw: str) -> dict[str, list[str]]:
    return {"client_assertion": [raw], "client_assertion_type": [JWT_BEARER], "client_id": ["m1"]}


def test_an_assertion_is_read_whole_up_to_its_length_limit():
    at_limit = "a" * MAX_ASSERTION_LENGTH  # no dots: not a JWS
    signed = jose.Signer(
        kid="k1", algorithm="ES256", private_key=ec.generate_private_key(ec.SECP256R1())
    ).sign(claims={"iss": "m1"}, typ="JWT")

    assert client_assertion_read(_assertion_form(at_limit)) == ClientAssertion(
        raw=at_limit, client_id="m1", problem="malformed_assertion"
    )
    assert client_assertion_read(_assertion_form(at_limit + "a")) == ClientAssertion(
        raw="", client_id="m1", problem="assertion_too_large"
    )
    assert client_assertion_read(_assertion_form(signed)) == ClientAssertion(
        raw=signed, client_id="m1", parsed=jose.jws_parse(signed)
    )


def _header(**header) -> ClientAssertion:
    parsed = jose.ParsedJWS(header=header, claims={}, signing_input=b"", signature=b"")
    return ClientAssertion(raw="h.c.s", client_id=None, parsed=parsed)


@pytest.mark.parametrize(
    ("assertion", "reason"),
    [
        (
            ClientAssertion(raw="", client_id=None, problem="assertion_too_large"),
            "assertion_too_large",
        ),
        (ClientAssertion(raw="x", client_id=None), "malformed_assertion"),
        (_header(alg="ES256", kid="k1"), ""),
        (_header(alg="ES256"), ""),
        (_header(alg="HS256"), "algorithm_not_allowed"),
        (_header(), "algorithm_not_allowed"),
        (_header(alg="ES256", crit=["exp"]), "unsupported_header"),
        (_header(alg="ES256", kid=7), "malformed_assertion"),
    ],
)
def test_an_assertions_header_is_checked_with_its_exact_reason(assertion, reason):
    assert assertion_header_check(assertion) == reason


def test_a_use_is_noted_again_from_the_instant_its_write_interval_ends(
    machine_and_secret, request_ctx, time_machine
):
    machine, raw = machine_and_secret
    time_machine.move_to(NOW, tick=False)
    _outcome(machine.client_id, raw, request_ctx)
    again = NOW + timedelta(seconds=LAST_USED_WRITE_INTERVAL)
    time_machine.move_to(again, tick=False)
    _outcome(machine.client_id, raw, request_ctx)

    assert ClientSecret.objects.get(machine=machine).last_used_at == again
