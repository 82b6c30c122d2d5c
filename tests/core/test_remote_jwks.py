"""core.remote_jwks: issuer keys fetched narrowly, cached, refetched on rotation, fail closed."""

from __future__ import annotations

import json
import socket
import threading
from datetime import timedelta

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.cache import cache

from core import jose, remote_jwks
from core.remote_jwks import RemoteKeysError

pytestmark = pytest.mark.usefixtures("fresh_remote_keys")


@pytest.fixture
def fresh_remote_keys():
    cache.clear()
    remote_jwks.reset()
    yield
    remote_jwks.reset()
    cache.clear()


def _verifier(issuer, kid=None, *, allow_private=True):
    return remote_jwks.issuer_verifier(
        issuer.url, kid=kid or issuer.signer.kid, alg="RS256", allow_private=allow_private
    )


def test_issuer_keys_come_from_its_discovery_document_and_verify_its_tokens(oidc_issuer):
    verifier = _verifier(oidc_issuer)

    token = oidc_issuer.mint(oidc_issuer.claims(audience="a", subject="s"))
    assert jose.jws_verify(jose.jws_parse(token), {verifier.kid: verifier}) is verifier
    assert oidc_issuer.requests == ["/.well-known/openid-configuration", "/jwks"]
    # Fresh keys are reused: no second fetch.
    _verifier(oidc_issuer)
    remote_jwks._memo.clear()  # another process: the shared cache serves it
    _verifier(oidc_issuer)
    assert len(oidc_issuer.requests) == 2


def test_the_cached_document_holds_public_members_only(oidc_issuer):
    _verifier(oidc_issuer)

    entry = cache.get(remote_jwks._cache_key("issuer", oidc_issuer.url))
    assert entry["locator"] == oidc_issuer.url
    public = jose.public_jwk(oidc_issuer.signer.private_key.public_key())
    assert entry["keys"] == [{**public, "kid": oidc_issuer.signer.kid, "alg": "RS256"}]


def test_a_rotated_key_is_fetched_once_and_made_up_kids_do_not_fetch_again(oidc_issuer):
    with time_machine.travel("2026-12-01 04:00:00+00:00", tick=False) as clock:
        _verifier(oidc_issuer)
        new_kid = oidc_issuer.rotate()

        assert _verifier(oidc_issuer, new_kid).kid == new_kid
        assert len(oidc_issuer.requests) == 4
        with pytest.raises(RemoteKeysError) as refused:
            _verifier(oidc_issuer, "made-up")
        assert refused.value.reason == "unknown_kid"
        assert len(oidc_issuer.requests) == 4  # within the minute: no fetch

        clock.shift(timedelta(seconds=remote_jwks.REFETCH_INTERVAL + 1))
        with pytest.raises(RemoteKeysError):
            _verifier(oidc_issuer, "made-up-2")
        assert len(oidc_issuer.requests) == 6  # one refetch a minute


def test_stale_keys_of_an_unreachable_issuer_verify_nothing(oidc_issuer):
    with time_machine.travel("2026-12-01 04:00:00+00:00", tick=False) as clock:
        _verifier(oidc_issuer)
        oidc_issuer.down = True
        clock.shift(timedelta(seconds=remote_jwks.KEYS_FRESH_FOR + 1))

        with pytest.raises(RemoteKeysError) as refused:
            _verifier(oidc_issuer)
        assert refused.value.reason == "http_503"
        # Backing off: the next request does not even try.
        with pytest.raises(RemoteKeysError) as refused:
            _verifier(oidc_issuer)
        assert refused.value.reason == "recently_unreachable"

        oidc_issuer.down = False
        clock.shift(timedelta(seconds=remote_jwks.FAILURE_BACKOFF + 1))
        assert _verifier(oidc_issuer).kid == oidc_issuer.signer.kid


def test_an_issuer_that_is_down_from_the_start_verifies_nothing(oidc_issuer):
    oidc_issuer.down = True
    with pytest.raises(RemoteKeysError) as refused:
        _verifier(oidc_issuer)
    assert refused.value.reason == "http_503"


def test_a_discovery_document_naming_another_issuer_is_refused(oidc_issuer):
    with pytest.raises(RemoteKeysError) as refused:
        remote_jwks.issuer_verifier(
            oidc_issuer.url + "/other", kid=oidc_issuer.signer.kid, alg="RS256", allow_private=True
        )
    assert refused.value.reason in {"http_404", "discovery_issuer_mismatch"}


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9/x", "url_refused"),  # plain http without allow-private
        ("https://127.0.0.1:9/x", "address_refused"),
        ("https://10.1.2.3/x", "address_refused"),
        ("https://169.254.169.254/latest", "address_refused"),  # cloud metadata
        ("https://[::1]/x", "address_refused"),
        ("https://[::ffff:127.0.0.1]/x", "address_refused"),
        ("https://user:pw@example.com/x", "url_refused"),
        ("ftp://example.com/x", "url_refused"),
        ("https://exa mple.com/x", "url_refused"),
        ("https://[::1/x", "url_refused"),
    ],
)
def test_urls_and_addresses_that_are_never_fetched(url, reason):
    with pytest.raises(RemoteKeysError) as refused:
        remote_jwks.fetch_json(url, allow_private=False)
    assert refused.value.reason == reason


def test_every_resolved_address_is_checked_and_the_connection_goes_to_a_checked_one(
    oidc_issuer, monkeypatch
):
    port = int(oidc_issuer.url.rsplit(":", 1)[1])
    # A name whose answers mix a public and a private address is refused outright.
    monkeypatch.setattr(
        remote_jwks,
        "_resolve",
        lambda host, port, timeout: [
            (socket.AF_INET, "93.184.216.34"),
            (socket.AF_INET, "10.0.0.1"),
        ],
    )
    with pytest.raises(RemoteKeysError) as refused:
        remote_jwks.fetch_json("https://issuer.test/jwks", allow_private=False)
    assert refused.value.reason == "address_refused"

    # The name is never resolved again by the connection: it goes to the checked address.
    monkeypatch.setattr(
        remote_jwks, "_resolve", lambda host, port, timeout: [(socket.AF_INET, "127.0.0.1")]
    )
    monkeypatch.setattr(socket, "getaddrinfo", _no_second_resolution)
    assert remote_jwks.fetch_json(f"http://issuer.test:{port}/jwks", allow_private=True) == (
        oidc_issuer.jwks()
    )


def _no_second_resolution(*args, **kwargs):
    raise AssertionError("resolved twice")


def test_plain_http_is_refused_to_a_non_loopback_address_even_when_private_is_allowed(
    monkeypatch,
):
    monkeypatch.setattr(
        remote_jwks, "_resolve", lambda host, port, timeout: [(socket.AF_INET, "10.0.0.1")]
    )
    with pytest.raises(RemoteKeysError) as refused:
        remote_jwks.fetch_json("http://issuer.internal/jwks", allow_private=True)
    assert refused.value.reason == "address_refused"


class _RawServer:
    """A loopback server that answers every connection with ``response`` bytes, or stalls."""

    def __init__(self, response: bytes | None) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/jwks"
        self.response = response
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        connection, _ = self.listener.accept()
        connection.recv(4096)
        if self.response is not None:
            connection.sendall(self.response)
        self.done.wait(10)
        connection.close()

    def close(self):
        self.done.set()
        self.listener.close()


def test_a_body_over_the_size_limit_is_refused():
    body = json.dumps({"keys": [], "pad": "x" * remote_jwks.MAX_DOCUMENT_BYTES}).encode()
    server = _RawServer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + body)
    try:
        with pytest.raises(RemoteKeysError) as refused:
            remote_jwks.fetch_json(server.url, allow_private=True)
    finally:
        server.close()
    assert refused.value.reason == "too_large"


def test_a_declared_length_over_the_limit_is_refused_unread():
    server = _RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 999999999\r\n\r\n{")
    try:
        with pytest.raises(RemoteKeysError) as refused:
            remote_jwks.fetch_json(server.url, allow_private=True)
    finally:
        server.close()
    assert refused.value.reason == "too_large"


def test_a_server_that_never_answers_is_given_up_on_within_the_time_limit(monkeypatch):
    monkeypatch.setattr(remote_jwks, "FETCH_TIMEOUT", 0.3)
    server = _RawServer(None)
    try:
        with pytest.raises(RemoteKeysError) as refused:
            remote_jwks.fetch_json(server.url, allow_private=True)
    finally:
        server.close()
    assert refused.value.reason == "timeout"


def test_redirects_are_not_followed():
    server = _RawServer(
        b"HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n"
    )
    try:
        with pytest.raises(RemoteKeysError) as refused:
            remote_jwks.fetch_json(server.url, allow_private=True)
    finally:
        server.close()
    assert refused.value.reason == "http_302"


def test_a_jwks_keeps_only_public_signing_keys_of_allowed_algorithms():
    ec_key = ec.generate_private_key(ec.SECP256R1())
    good = {**jose.public_jwk(ec_key.public_key()), "kid": "good"}
    private = {**good, "kid": "private", "d": "AAAA"}
    hmac_key = {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"}
    encryption = {**good, "kid": "enc", "use": "enc"}
    wrong_alg = {**good, "kid": "es512", "alg": "ES512"}

    keyset = remote_jwks.keyset_from_jwks(
        {"keys": [good, private, hmac_key, encryption, wrong_alg, "junk", None]}
    )

    assert sorted(keyset.verifiers) == [("good", "ES256")]
    assert remote_jwks.public_jwks({"keys": [good, private]}) == [good]


@pytest.mark.parametrize(
    "document", [None, [], {}, {"keys": {}}, {"keys": []}, {"keys": [{"kty": "oct", "k": "AA"}]}]
)
def test_a_jwks_without_any_usable_key_is_refused(document):
    with pytest.raises(ValueError):
        remote_jwks.keyset_from_jwks(document)
