import json

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_healthz_answers_ok_and_is_never_cached(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert json.loads(response.content) == {"status": "ok"}
    assert "no-store" in response["Cache-Control"]


def test_readyz_reports_database_broker_and_signing_key(client, signing_key):
    response = client.get("/readyz")

    assert response.status_code == 200
    body = json.loads(response.content)
    assert body["status"] == "ready"
    assert body["checks"]["database"] is True
    assert body["checks"]["broker"] is True
    assert body["checks"]["signing_key"] is True
    assert body["checks"]["signing_keys_authentic"] is True
    assert body["key_problems"] == []
    assert "no-store" in response["Cache-Control"]


@override_settings(CELERY_BROKER_URL="redis://127.0.0.1:9/0")
def test_readyz_is_503_when_the_broker_is_unreachable(client, signing_key):
    # Port 9 (discard) is closed on loopback: a real refused connection.
    response = client.get("/readyz")

    assert response.status_code == 503
    body = json.loads(response.content)
    assert body["status"] == "not ready"
    assert body["checks"] == {
        "database": True,
        "broker": False,
        "signing_key": True,
        "signing_keys_authentic": True,
    }


def test_readyz_is_503_without_an_active_signing_key(client):
    response = client.get("/readyz")

    assert response.status_code == 503
    assert json.loads(response.content)["checks"]["signing_key"] is False


def test_health_refuses_other_methods(client):
    assert client.post("/healthz").status_code == 405


@override_settings(SECURE_SSL_REDIRECT=True)
def test_probes_are_exempt_from_the_https_redirect(client):
    assert client.get("/healthz").status_code == 200
    assert client.get("/console/").status_code == 301
