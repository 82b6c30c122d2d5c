"""The token insert is a prepared statement on PostgreSQL, unless turned off."""

import pytest
from django.db import connection

from tests.tokens.helpers import token_request
from tokens.models import IssuedToken

_OURS = "SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s"
_INSERT = 'WITH t AS (INSERT INTO "tokens_issuedtoken"%'


def _prepared_inserts() -> int:
    with connection.cursor() as cursor:
        cursor.execute(_OURS, [_INSERT])
        return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_token_insert_is_prepared_once_per_connection(signing_key, machine_factory, client):
    connection.close()  # a fresh connection: nothing prepared yet
    registered = machine_factory()
    assert token_request(client, registered).status_code == 200
    assert token_request(client, registered).status_code == 200
    assert _prepared_inserts() == 1
    assert IssuedToken.objects.count() == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_prepared_statements_can_be_turned_off(signing_key, machine_factory, client, settings):
    settings.DATABASE_PREPARED_STATEMENTS = False
    connection.close()
    registered = machine_factory()
    assert token_request(client, registered).status_code == 200
    assert token_request(client, registered).status_code == 200
    assert _prepared_inserts() == 0
    assert IssuedToken.objects.count() == 2
