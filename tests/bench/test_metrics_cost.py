"""bench/metrics_cost.py times the metrics calls of one token request: the same calls."""

from __future__ import annotations

import pytest

from bench.metrics_cost import instrumentation_of_one_request
from core import metrics
from tests.tokens.helpers import token_request

pytestmark = pytest.mark.django_db


def _counts() -> dict[tuple[str, tuple], float]:
    """Every count of the counted families (histogram sums left out: their amounts vary)."""
    metrics.flush()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in metrics.FAMILIES
        for collected in family.collect()
        for sample in collected.samples
        if not sample.name.endswith("_sum")
        and not (sample.name.endswith("_bucket") and sample.labels.get("le") != "+Inf")
    }


def _increments(action) -> dict[tuple[str, tuple], float]:
    before = _counts()
    action()
    after = _counts()
    return {
        key: after[key] - before.get(key, 0.0) for key in after if after[key] != before.get(key)
    }


def test_the_timed_calls_count_exactly_what_a_token_request_counts(
    client, signing_key, machine_factory
):
    registered = machine_factory()

    by_request = _increments(lambda: token_request(client, registered))
    by_bench = _increments(instrumentation_of_one_request())

    assert by_bench == by_request
    assert by_request == {
        (
            "portal_tokens_issued_total",
            (("auth_method", "client_secret_basic"), ("grant", "client_credentials")),
        ): 1.0,
        ("portal_http_responses_total", (("code", "2xx"), ("endpoint", "token"))): 1.0,
        ("portal_token_request_duration_seconds_bucket", (("le", "+Inf"),)): 1.0,
        ("portal_token_request_duration_seconds_count", ()): 1.0,
    }
