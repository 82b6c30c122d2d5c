"""The management API's OpenAPI schema is valid, complete, and its viewers need no CDN."""

from __future__ import annotations

import re

import pytest
import yaml
from openapi_spec_validator import validate

pytestmark = pytest.mark.django_db

OPERATIONS = {
    ("get", "/api/v1/machines"),
    ("post", "/api/v1/machines"),
    ("get", "/api/v1/machines/{client_id}"),
    ("patch", "/api/v1/machines/{client_id}"),
    ("delete", "/api/v1/machines/{client_id}"),
    ("post", "/api/v1/machines/{client_id}/disable"),
    ("post", "/api/v1/machines/{client_id}/enable"),
    ("post", "/api/v1/machines/{client_id}/secrets"),
    ("delete", "/api/v1/machines/{client_id}/secrets/{secret_id}"),
    ("get", "/api/v1/scopes"),
    ("post", "/api/v1/scopes"),
    ("get", "/api/v1/audiences"),
    ("post", "/api/v1/audiences"),
    ("get", "/api/v1/keys"),
    ("post", "/api/v1/keys/rotate"),
    ("post", "/api/v1/keys/{kid}/revoke"),
    ("get", "/api/v1/audit/events"),
    ("post", "/api/v1/audit/export"),
}


def _schema(client) -> dict:
    response = client.get("/api/v1/schema")
    assert response.status_code == 200
    return yaml.safe_load(response.content)


def test_the_schema_is_valid_openapi_3_1_and_lists_every_operation(client):
    schema = _schema(client)

    validate(schema)
    assert schema["openapi"] == "3.1.0"
    listed = {
        (method, path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "patch", "put", "delete"}
    }
    assert listed >= OPERATIONS
    assert schema["components"]["securitySchemes"]["machineToken"]["scheme"] == "bearer"


def test_every_write_documents_its_problem_answers(client):
    schema = _schema(client)
    for method, path in OPERATIONS:
        if method == "get" or path.startswith("/api/v1/audit"):
            continue
        responses = schema["paths"][path][method]["responses"]
        assert {"400", "401", "403", "429"} <= set(responses), (method, path)


@pytest.mark.parametrize("page", ["/api/v1/docs", "/api/v1/redoc"])
def test_the_viewers_load_everything_from_our_static_files(client, page):
    response = client.get(page)

    assert response.status_code == 200
    html = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources, html
    assert all(src.startswith("/") for src in sources), sources
    assert "<script>" not in html  # no inline script (the console's CSP forbids it)
    assert "<style>" not in html
