"""The source IP (allow-lists, throttling, audit) trusts X-Forwarded-For from proxies only."""

import pytest
from django.test import RequestFactory

from audit.context import request_context
from audit.models import AuditEvent
from clients.authentication import ClientAuthError, ClientCredentials, client_authenticate
from clients.services import machine_update


def _context(remote_addr, forwarded=None):
    extra = {"REMOTE_ADDR": remote_addr}
    if forwarded is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded
    return request_context(RequestFactory().post("/oauth/token", **extra))


@pytest.fixture
def allow_listed(machine_and_secret, cli_actor):
    machine, raw = machine_and_secret
    machine_update(actor=cli_actor, machine=machine, ip_allowlist=["192.0.2.0/24"])
    return machine, raw


def _auth(machine, raw, context):
    return client_authenticate(
        credentials=ClientCredentials(
            client_id=machine.client_id, secret=raw, method="client_secret_basic"
        ),
        context=context,
    ).machine


def test_forwarded_for_from_an_untrusted_peer_is_ignored(allow_listed, settings):
    machine, raw = allow_listed
    settings.TRUSTED_PROXIES = []

    with pytest.raises(ClientAuthError) as raised:
        _auth(machine, raw, _context("198.51.100.1", "192.0.2.10"))

    assert raised.value.reason == "ip_not_allowed"
    assert AuditEvent.objects.get(event_type="token.denied").source_ip == "198.51.100.1"


def test_forwarded_for_from_a_trusted_proxy_is_believed(allow_listed, settings):
    machine, raw = allow_listed
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]

    found = _auth(machine, raw, _context("10.0.0.5", "203.0.113.99, 192.0.2.10"))

    assert found.pk == machine.pk
    machine.refresh_from_db()
    assert machine.last_used_ip == "192.0.2.10"


def test_a_spoofed_leftmost_hop_is_not_believed(allow_listed, settings):
    machine, raw = allow_listed
    settings.TRUSTED_PROXIES = ["10.0.0.0/8"]

    with pytest.raises(ClientAuthError) as raised:
        _auth(machine, raw, _context("10.0.0.5", "192.0.2.10, 198.51.100.1"))

    assert raised.value.reason == "ip_not_allowed"
    assert AuditEvent.objects.get(event_type="token.denied").source_ip == "198.51.100.1"
