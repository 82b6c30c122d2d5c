"""GET /metrics: every family, read by the real Prometheus parser; who may read it."""

from __future__ import annotations

import ipaddress
import json
from datetime import timedelta

import pytest
import time_machine
from django.conf import settings
from django.test import override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from audit.models import AuditEvent
from audit.services import audit_seal_pending
from core import metrics
from identity_portal import metrics as metrics_view
from tests.fixtures.tokens import API
from tests.tokens.helpers import FORM, basic, token_request

pytestmark = pytest.mark.django_db
URL = "/metrics"
OUTSIDE = "203.0.113.7"

COUNTED_FAMILIES = {
    "portal_tokens_issued": "counter",
    "portal_tokens_denied": "counter",
    "portal_token_request_duration_seconds": "histogram",
    "portal_http_responses": "counter",
    "portal_cache_errors": "counter",
    "portal_database_errors": "counter",
    "portal_throttled_requests": "counter",
}
READ_FAMILIES = {
    "portal_audit_unsealed_events": "gauge",
    "portal_audit_oldest_unsealed_event_age_seconds": "gauge",
    "portal_audit_chain_head_position": "gauge",
    "portal_audit_checkpoint_age_seconds": "gauge",
    "portal_signing_keys": "gauge",
    "portal_signing_key_active_age_seconds": "gauge",
    "portal_signing_keys_signing": "gauge",
    "portal_signing_keys_distrusted": "gauge",
    "portal_client_secrets": "gauge",
    "portal_machines_secrets_expiring": "gauge",
    "portal_job_interval_seconds": "gauge",
    "portal_job_last_run_timestamp_seconds": "gauge",
    "portal_job_last_run_success": "gauge",
    "portal_job_last_run_duration_seconds": "gauge",
    "portal_metrics_database_up": "gauge",
}


@pytest.fixture(autouse=True)
def _fresh_secrets_figures():
    metrics_view.secrets_memo.clear()
    yield
    metrics_view.secrets_memo.clear()


def scrape(client, **headers) -> dict:
    response = client.get(URL, **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    return {f.name: f for f in text_string_to_metric_families(response.content.decode())}


def value(families: dict, sample_name: str, **labels) -> float | None:
    family_name = sample_name.removesuffix("_total").removesuffix("_bucket")
    family_name = family_name.removesuffix("_count").removesuffix("_sum")
    for sample in families[family_name].samples:
        if sample.name == sample_name and sample.labels == labels:
            return sample.value
    return None


def counted(families: dict, sample_name: str, **labels) -> float:
    return value(families, sample_name, **labels) or 0.0


def _metrics_reader(machine_factory, **kwargs):
    return machine_factory(
        name="prometheus",
        scopes=("metrics:read",),
        default_scopes=("metrics:read",),
        audiences=(API, settings.METRICS_AUDIENCE),
        **kwargs,
    )


def _token(client, registered, **params) -> str:
    response = token_request(client, registered, **params)
    assert response.status_code == 200, response.content
    return json.loads(response.content)["access_token"]


# --- Every family, through the real parser -------------------------------------------


def test_every_family_is_served_and_parsed_with_the_counts_of_the_requests(
    client, signing_key, machine_factory
):
    registered = machine_factory()
    audit_seal_pending()
    before = scrape(client)

    issued = token_request(client, registered)
    wrong_secret = client.post(
        "/oauth/token",
        data="grant_type=client_credentials",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(registered.client_id, "mip_cs_wrong"),
    )
    bad_scope = token_request(client, registered, scope="payroll:admin")
    no_grant = client.post(
        "/oauth/token",
        data=f"client_id={registered.client_id}&client_secret={registered.secret}",
        content_type=FORM,
    )
    after = scrape(client)

    assert [r.status_code for r in (issued, wrong_secret, bad_scope, no_grant)] == [
        200,
        401,
        400,
        400,
    ]
    types = {name: family.type for name, family in after.items()}
    assert types == {**COUNTED_FAMILIES, **READ_FAMILIES}

    def delta(name, **labels):
        return counted(after, name, **labels) - counted(before, name, **labels)

    basic_cc = {"grant": "client_credentials", "auth_method": "client_secret_basic"}
    assert delta("portal_tokens_issued_total", **basic_cc) == 1
    assert delta("portal_tokens_denied_total", **basic_cc, reason="wrong_secret") == 1
    assert delta("portal_tokens_denied_total", **basic_cc, reason="invalid_scope") == 1
    # No grant_type: neither the grant nor the method is known yet.
    assert (
        delta(
            "portal_tokens_denied_total", grant="none", auth_method="none", reason="invalid_request"
        )
        == 1
    )
    assert delta("portal_token_request_duration_seconds_count") == 4
    assert delta("portal_token_request_duration_seconds_bucket", le="+Inf") == 4
    assert delta("portal_http_responses_total", endpoint="token", code="2xx") == 1
    assert delta("portal_http_responses_total", endpoint="token", code="4xx") == 3
    # The scrape before counted itself once it was answered.
    assert delta("portal_http_responses_total", endpoint="metrics", code="2xx") == 1
    # Read at scrape time: the token's and the two denials' events wait for the sealer
    # (a request without grant_type is refused before anyone is authenticated: no event).
    assert value(before, "portal_audit_unsealed_events") == 0
    assert value(after, "portal_audit_unsealed_events") == 3
    assert list(
        AuditEvent.objects.filter(seal__isnull=True).values_list("event_type", "reason")
    ) == [("token.issued", ""), ("token.denied", "wrong_secret"), ("token.denied", "invalid_scope")]
    assert value(after, "portal_signing_keys", state="active") == 1
    assert value(after, "portal_signing_keys", state="pending") == 0
    assert value(after, "portal_signing_keys_signing") == 1
    assert value(after, "portal_signing_keys_distrusted") == 0
    assert value(after, "portal_client_secrets", state="active") == 1
    assert value(after, "portal_job_interval_seconds", periodic_job="audit-seal") == 10
    assert value(after, "portal_metrics_database_up") == 1


def test_no_client_id_nor_anything_sent_becomes_a_label_value(client, signing_key):
    client.post(
        "/oauth/token",
        data="grant_type=urn:evil:grant&client_id=evil-client-7f3a&client_secret=x",
        content_type=FORM,
    )
    client.post(
        "/oauth/token",
        data="grant_type=client_credentials",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic("evil-client-7f3a", "mip_cs_guess"),
    )

    body = client.get(URL).content.decode()

    assert "evil" not in body
    assert "mip_cs_" not in body
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert (
        value(
            families,
            "portal_tokens_denied_total",
            grant="client_credentials",
            auth_method="client_secret_basic",
            reason="unknown_client",
        )
        >= 1
    )
    assert (
        value(
            families,
            "portal_tokens_denied_total",
            grant="none",
            auth_method="none",
            reason="unsupported_grant_type",
        )
        >= 1
    )


def test_a_label_takes_at_most_its_bound_of_values_and_only_identifiers():
    label = metrics._LabelValues()
    taken = [label(f"reason_{n}") for n in range(metrics.MAX_VALUES_PER_LABEL + 5)]

    assert taken[: metrics.MAX_VALUES_PER_LABEL] == [
        f"reason_{n}" for n in range(metrics.MAX_VALUES_PER_LABEL)
    ]
    assert taken[metrics.MAX_VALUES_PER_LABEL :] == ["other"] * 5
    assert label("reason_0") == "reason_0"  # a value already taken stays itself
    fresh = metrics._LabelValues()
    assert [fresh(v) for v in ("Bad Value", "x" * 41, "0day", "", None, "ok_1")] == [
        "other",
        "other",
        "other",
        "other",
        "other",
        "ok_1",
    ]


# --- Counting in batches ---------------------------------------------------------


def _latency_buckets(histogram) -> list[float]:
    return [bucket.get() for bucket in histogram._buckets]


def test_latencies_written_in_a_batch_land_where_observe_puts_them():
    """Bounds included in their bucket, past the last one +Inf: as Histogram.observe does."""
    from prometheus_client import Histogram

    seconds = [0.0005, 0.001, 0.0011, 0.0025, 0.3, 4.99, 5.0, 7.5, 0.0]
    direct = Histogram("direct", "d", buckets=metrics.TOKEN_LATENCY_BUCKETS, registry=None)
    for value in seconds:
        direct.observe(value)
    metrics.flush()
    buckets_before = _latency_buckets(metrics.TOKEN_REQUEST_SECONDS)
    sum_before = metrics.TOKEN_REQUEST_SECONDS._sum.get()

    for value in seconds:
        metrics.response_counted(endpoint="token", status=200, seconds=value)
    metrics.flush()

    added = [
        after - before
        for after, before in zip(
            _latency_buckets(metrics.TOKEN_REQUEST_SECONDS), buckets_before, strict=True
        )
    ]
    assert added == _latency_buckets(direct)
    assert added == [3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 1.0]
    assert metrics.TOKEN_REQUEST_SECONDS._sum.get() - sum_before == pytest.approx(
        sum(seconds), rel=1e-12
    )


def test_every_count_is_written_once_by_the_flush_and_only_then():
    child = metrics.TOKENS_ISSUED.labels("client_credentials", "private_key_jwt")
    metrics.flush()
    before = child._value.get()

    for _ in range(3):
        metrics.token_issued(grant="client_credentials", auth_method="private_key_jwt")
    with metrics._lock:  # what the flusher thread would write next, if it has not yet
        pending = metrics._pending.get(child, 0)
    written = child._value.get() - before
    metrics.flush()
    metrics.flush()  # nothing left: a second flush adds nothing

    assert pending + written == 3
    assert child._value.get() == before + 3
    assert metrics._pending == {}


def test_a_forked_child_starts_without_its_parents_pending_counts():
    import os

    child = metrics.TOKENS_DENIED.labels("client_credentials", "none", "invalid_scope")
    metrics.flush()
    before = child._value.get()
    metrics.token_denied(grant="client_credentials", auth_method=None, reason="invalid_scope")

    pid = os.fork()
    if pid == 0:  # the child: nothing pending, nothing written twice
        metrics.flush()
        os._exit(0 if not metrics._pending and child._value.get() == before else 1)
    _, status = os.waitpid(pid, 0)
    metrics.flush()

    assert os.waitstatus_to_exitcode(status) == 0
    assert child._value.get() == before + 1


def test_label_combinations_past_the_memo_limit_are_counted_but_not_kept():
    metrics.flush()
    kept_before = len(metrics._denied)
    room = metrics._MEMO_LIMIT - kept_before
    other = metrics.TOKENS_DENIED.labels("none", "none", "other")
    other_before = other._value.get()

    for n in range(room + 10):
        metrics.token_denied(grant=None, auth_method=None, reason=f"Odd Reason {n}")
    metrics.flush()

    assert len(metrics._denied) == metrics._MEMO_LIMIT
    assert other._value.get() == other_before + room + 10


@override_settings(METRICS_ENABLED=False)
def test_metrics_off_counts_nothing_and_serves_nothing(client, signing_key, machine_factory):
    registered = machine_factory()
    issued_before = metrics.TOKENS_ISSUED.labels("client_credentials", "client_secret_basic")
    count_before = issued_before._value.get()

    response = token_request(client, registered)
    scraped = client.get(URL)

    assert response.status_code == 200
    assert scraped.status_code == 404
    assert b"portal_" not in scraped.content
    assert issued_before._value.get() == count_before


# --- Who may read ---------------------------------------------------------------------


def _refused(response, status: int, challenge: str) -> None:
    assert response.status_code == status
    assert response["WWW-Authenticate"] == challenge
    assert b"portal_" not in response.content
    assert b"# TYPE" not in response.content


REALM = 'Bearer realm="Machine Identity Portal"'


def test_an_outside_address_is_refused_and_a_forged_forwarded_for_does_not_help(client):
    plain = client.get(URL, REMOTE_ADDR=OUTSIDE)
    forged = client.get(URL, REMOTE_ADDR=OUTSIDE, HTTP_X_FORWARDED_FOR="127.0.0.1")
    forged_v6 = client.get(URL, REMOTE_ADDR=OUTSIDE, HTTP_X_FORWARDED_FOR="::1")

    _refused(plain, 401, REALM)
    _refused(forged, 401, REALM)
    _refused(forged_v6, 401, REALM)


@override_settings(TRUSTED_PROXIES=["127.0.0.1/32"])
def test_behind_a_trusted_proxy_the_client_address_decides_not_the_proxys(client):
    """The proxy is on loopback, but the client it forwards is outside: refused."""
    forwarded = client.get(URL, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=OUTSIDE)
    spoofed_chain = client.get(
        URL, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR=f"127.0.0.1, {OUTSIDE}"
    )

    _refused(forwarded, 401, REALM)
    _refused(spoofed_chain, 401, REALM)


@override_settings(
    TRUSTED_PROXIES=["127.0.0.1/32"],
    METRICS_ALLOWED_NETWORKS=(ipaddress.ip_network("10.20.0.0/16"),),
)
def test_an_allowed_network_reads_the_metrics_directly_or_through_a_trusted_proxy(client):
    direct = client.get(URL, REMOTE_ADDR="10.20.3.4")
    proxied = client.get(URL, REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="10.20.3.4")
    loopback = client.get(URL, REMOTE_ADDR="127.0.0.1")

    assert (direct.status_code, proxied.status_code) == (200, 200)
    assert b"# TYPE portal_tokens_issued_total counter" in direct.content
    _refused(loopback, 401, REALM)  # loopback is not in the configured networks


def test_a_token_with_metrics_read_for_the_metrics_audience_reads_from_outside(
    client, signing_key, machine_factory
):
    reader = _metrics_reader(machine_factory)
    token = _token(client, reader, resource=settings.METRICS_AUDIENCE)

    families = scrape(client, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {token}")

    assert set(families) == {*COUNTED_FAMILIES, *READ_FAMILIES}


def test_a_token_without_the_scope_or_for_another_audience_is_refused_with_403(
    client, signing_key, machine_factory
):
    reader = _metrics_reader(machine_factory)
    other = machine_factory(name="other", audiences=(API, settings.METRICS_AUDIENCE))
    no_scope = _token(client, other, resource=settings.METRICS_AUDIENCE)
    for_api = _token(client, reader)  # metrics:read, but for the API's audience

    for token in (no_scope, for_api):
        response = client.get(URL, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {token}")
        _refused(response, 403, f'{REALM}, error="insufficient_scope"')


def test_an_expired_a_revoked_or_a_forged_token_is_refused_with_401(
    client, signing_key, machine_factory
):
    reader = _metrics_reader(machine_factory)
    token = _token(client, reader, resource=settings.METRICS_AUDIENCE)
    revoked = _token(client, reader, resource=settings.METRICS_AUDIENCE)
    client.post(
        "/oauth/revoke",
        data=f"token={revoked}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(reader.client_id, reader.secret),
    )
    header, payload, signature = token.split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    invalid = f'{REALM}, error="invalid_token"'

    with time_machine.travel(timezone.now() + timedelta(seconds=601), tick=False):
        expired = client.get(URL, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {token}")
    _refused(expired, 401, invalid)
    for bad in (revoked, forged, "not-a-jwt", f"{token} extra"):
        response = client.get(URL, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {bad}")
        _refused(response, 401, invalid)
    basic_auth = client.get(
        URL, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=basic(reader.client_id, reader.secret)
    )
    _refused(basic_auth, 401, REALM)
    # The same token, still valid, reads.
    assert (
        client.get(URL, REMOTE_ADDR=OUTSIDE, HTTP_AUTHORIZATION=f"Bearer {token}").status_code
        == 200
    )


def test_only_get_is_answered(client):
    assert client.post(URL).status_code == 405


def test_the_security_headers_leave_the_exposition_format_alone(client):
    # The console's CSP and Permissions-Policy reach /metrics too; a scraper ignores
    # them, but the body and its content type must stay what Prometheus parses.
    response = client.get(URL)

    assert response.status_code == 200
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert response["Content-Security-Policy"] == settings.CONTENT_SECURITY_POLICY
    assert response["Permissions-Policy"] == settings.PERMISSIONS_POLICY
    assert set(scrape(client)) >= set(COUNTED_FAMILIES)
