"""A dropped database connection answers 503 at the token endpoint, never a 500."""

import json

import psycopg
import pytest
from django.db import close_old_connections, connection

from audit.models import AuditEvent
from tests.fixtures.celery_worker import _database_url
from tests.tokens.helpers import token_request
from tokens.models import IssuedToken


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_killed_database_connection_gives_503_then_recovers(signing_key, machine_factory, client):
    registered = machine_factory()
    assert token_request(client, registered).status_code == 200
    backend_pid = connection.connection.info.backend_pid
    with psycopg.connect(_database_url(), autocommit=True) as other:
        other.execute("SELECT pg_terminate_backend(%s)", [backend_pid])

    refused = token_request(client, registered)
    # What the WSGI handler does at the end of every request: drop a broken connection.
    close_old_connections()
    recovered = token_request(client, registered)

    assert refused.status_code == 503
    assert json.loads(refused.content) == {
        "error": "temporarily_unavailable",
        "error_description": "The service is briefly unavailable.",
    }
    assert refused["Cache-Control"] == "no-store"
    assert recovered.status_code == 200
    assert IssuedToken.objects.count() == 2
    assert AuditEvent.objects.filter(event_type="token.issued").count() == 2
