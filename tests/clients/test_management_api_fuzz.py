"""Schemathesis: property-based requests against every operation of the management API schema.

Each operation gets generated valid and invalid requests, sent with a token
that holds every management scope (so requests reach the views, not only the
permission check). Any 5xx, any answer the schema does not describe, or a
response body that breaks its schema fails the test. Runs on PostgreSQL (CI).
"""

from __future__ import annotations

import pytest
import schemathesis
from django.conf import settings
from django.core import signals
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis import checks

from identity_portal.wsgi import application
from tests.tokens.helpers import issue_token

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

MANAGEMENT = ("machines:read", "machines:write", "keys:write")


# Loaded at collection: the schema view reads no database. The audit API takes tokens
# for its own audience, so its operations are left to its own tests.
schema = schemathesis.openapi.from_wsgi("/api/v1/schema?format=json", application).exclude(
    path_regex="^/api/v1/audit"
)


@pytest.fixture
def bearer(client, signing_key, machine_factory, settings):
    settings.MANAGEMENT_API_RATE = "1000000/minute"
    management = machine_factory(
        name="fuzzer",
        scopes=MANAGEMENT,
        default_scopes=MANAGEMENT,
        audiences=(settings.MANAGEMENT_API_AUDIENCE, settings.AUDIT_API_AUDIENCE),
        default_audience=settings.MANAGEMENT_API_AUDIENCE,
    )
    token = issue_token(client, management)
    # As Django's test client does around its requests: the end of a request must not
    # close the test's connection, whose transaction holds the test's data.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield f"Bearer {token}"
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@schema.parametrize()
@hypothesis_settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx_or_breaks_its_schema(case, bearer):
    case.call_and_validate(
        headers={"Authorization": bearer, "Host": settings.ALLOWED_HOSTS[0]},
        # Request strictness is not what this test measures: a body the schema allows may
        # still be refused by the registry's rules (an audience URI, a duplicate name, a
        # NUL in a string), and DRF's parsing is lenient by design (0 as false, trimmed
        # whitespace). What must hold: no 5xx and every response as documented.
        excluded_checks=[checks.positive_data_acceptance, checks.negative_data_rejection],
    )
