"""No token or secret value is stored in any table or written to any log."""

import io
import json
import logging
from urllib.parse import quote_plus

import pytest
from django.db import connection

from tests.tokens.helpers import FORM, basic, token_request

pytestmark = pytest.mark.django_db


def _scenario(client, machine_factory) -> list[str]:
    """Good and bad requests on every endpoint; returns every sensitive value seen."""
    worker = machine_factory(name="worker")
    gateway = machine_factory(name="gateway", scopes=("tokens:introspect",), default_scopes=())
    issued = json.loads(token_request(client, worker, scope="openid orders:read").content)
    second = json.loads(token_request(client, worker).content)
    for token in (issued["access_token"], "eyJhbGciOiJub25lIn0.e30."):
        client.post(
            "/oauth/introspect",
            data=f"token={quote_plus(token)}",
            content_type=FORM,
            HTTP_AUTHORIZATION=basic(gateway.client_id, gateway.secret),
        )
    client.post(
        "/oauth/revoke",
        data=f"token={second['access_token']}",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(worker.client_id, worker.secret),
    )
    # Failures: wrong secret (Basic and form), a secret in the client_id field, bad scope.
    client.post(
        "/oauth/token",
        data="grant_type=client_credentials",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(worker.client_id, worker.secret[:-1] + "x"),
    )
    client.post(
        "/oauth/token",
        data=f"grant_type=client_credentials&client_id={worker.secret}&client_secret={worker.secret}",
        content_type=FORM,
    )
    client.post(
        "/oauth/token",
        data="grant_type=client_credentials&scope=admin",
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(worker.client_id, worker.secret),
    )
    values = [worker.secret, gateway.secret, issued["id_token"]]
    for token in (issued["access_token"], second["access_token"], issued["id_token"]):
        values.append(token)
        values.append(token.rsplit(".", 1)[1])  # the signature alone is a credential fragment
    assert all(values)
    return values


def _every_stored_value() -> list[str]:
    found = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            columns = [
                c.name for c in connection.introspection.get_table_description(cursor, table)
            ]
            quoted = ", ".join(connection.ops.quote_name(c) for c in columns)
            cursor.execute(f"SELECT {quoted} FROM {connection.ops.quote_name(table)}")  # noqa: S608
            for row in cursor.fetchall():
                for value in row:
                    if isinstance(value, bytes | memoryview):
                        found.append(bytes(value).decode("latin-1"))
                    elif value is not None:
                        found.append(str(value))
    return found


def test_no_token_or_secret_is_found_in_any_column_of_any_table(
    client, signing_key, machine_factory
):
    sensitive = _scenario(client, machine_factory)

    stored = _every_stored_value()

    assert len(stored) > 100  # the scan did read the tables
    leaks = [value for value in sensitive if any(value in cell for cell in stored)]
    assert leaks == []


def test_no_token_or_secret_reaches_any_log_even_at_debug(
    client, signing_key, machine_factory, caplog
):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    names = ["", "oauthlib", "oauth2_provider", "django", "django.request", "django.db.backends"]
    names += list(logging.root.manager.loggerDict)
    previous = {name: logging.getLogger(name).level for name in names}
    root.addHandler(handler)
    connection.force_debug_cursor = True  # SQL with its parameters goes to the log too
    try:
        for name in names:
            logging.getLogger(name).setLevel(logging.DEBUG)
        with caplog.at_level(logging.DEBUG):
            sensitive = _scenario(client, machine_factory)
    finally:
        connection.force_debug_cursor = False
        root.removeHandler(handler)
        for name, level in previous.items():
            logging.getLogger(name).setLevel(level)

    captured = stream.getvalue() + "\n".join(
        f"{record.getMessage()} {record.args}" for record in caplog.records
    )
    assert "INSERT INTO" in captured  # the capture did see DEBUG output
    leaks = [value for value in sensitive if value in captured]
    assert leaks == []
