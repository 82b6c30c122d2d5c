"""core.client_address: X-Forwarded-For is believed only from trusted proxies."""

from __future__ import annotations

import pytest
from django.test import RequestFactory

from core.client_address import client_ip


@pytest.mark.parametrize(
    ("proxies", "peer", "forwarded", "expected"),
    [
        ([], "203.0.113.9", "198.51.100.1", "203.0.113.9"),  # no proxy configured
        (["10.0.0.0/8"], "203.0.113.9", "198.51.100.1", "203.0.113.9"),  # peer not trusted
        (["10.0.0.0/8"], "10.0.0.2", "198.51.100.1", "198.51.100.1"),
        # The rightmost hop that is not a trusted proxy, not the client's own claim.
        (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.7", "198.51.100.1"),
        (["10.0.0.0/8"], "10.0.0.2", "198.51.100.1, not-an-ip", "10.0.0.2"),  # malformed
        (["10.0.0.0/8"], "10.0.0.2", "", "10.0.0.2"),
        (["10.0.0.0/8", "bogus"], "10.0.0.2", "2001:db8::1", "2001:db8::1"),
    ],
)
def test_client_ip(settings, proxies, peer, forwarded, expected):
    settings.TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR=peer, HTTP_X_FORWARDED_FOR=forwarded)

    assert client_ip(request) == expected


@pytest.mark.parametrize(
    ("proxies", "expected"),
    [
        # A proxy written with host bits set is still the network it names.
        (["10.0.0.1/8"], "198.51.100.1"),
        # An unreadable entry is skipped, not the end of the list.
        (["bogus", "10.0.0.0/8"], "198.51.100.1"),
        (["bogus"], "10.0.0.2"),
    ],
)
def test_trusted_proxy_entries_are_read_leniently_one_by_one(settings, proxies, expected):
    settings.TRUSTED_PROXIES = proxies
    request = RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="198.51.100.1")

    assert client_ip(request) == expected


def test_a_trusted_proxy_that_sends_no_forwarded_header_is_the_client(settings):
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]

    assert client_ip(RequestFactory().get("/", REMOTE_ADDR="10.0.0.2")) == "10.0.0.2"


def test_a_hop_longer_than_any_address_is_not_believed_nor_remembered(settings):
    from core import client_address

    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]
    longest = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255"
    before = client_address._address_parsed.cache_info().currsize
    request = RequestFactory().get(
        "/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1" * 60_000 + ", " + longest
    )

    assert client_ip(request) == longest
    assert (
        client_ip(
            RequestFactory().get("/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR="1" * 60_000)
        )
        == "10.0.0.2"
    )
    assert client_address._address_parsed.cache_info().currsize <= before + 2
