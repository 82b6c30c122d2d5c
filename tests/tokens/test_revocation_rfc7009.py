"""Revocation as RFC 7009 sections 2.1 and 2.2 say: another client's token is refused, told."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditEvent
from tests.tokens.helpers import FORM, basic, form_body, issue_token
from tokens.models import IssuedToken

pytestmark = pytest.mark.django_db


def test_revoking_another_clients_token_is_refused_audited_and_changes_nothing(
    client, signing_key, machine_factory
):
    owner = machine_factory(name="owner")
    other = machine_factory(name="other")
    token = issue_token(client, owner)

    response = client.post(
        "/oauth/revoke",
        data=form_body(token=token),
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(other.client_id, other.secret),
    )

    assert response.status_code == 400
    assert json.loads(response.content) == {
        "error": "unauthorized_client",
        "error_description": "The token was not issued to this client.",
    }
    assert response["Cache-Control"] == "no-store"
    assert IssuedToken.objects.get().revoked_at is None
    event = AuditEvent.objects.get(event_type="token.revoked")
    assert (event.actor_id, event.outcome, event.reason, event.target_id, event.details) == (
        other.client_id,
        "failure",
        "not_own_token",
        "",
        {},
    )


def test_the_revocation_200_is_an_empty_uncached_answer_not_html(
    client, signing_key, machine_factory
):
    owner = machine_factory()
    token = issue_token(client, owner)

    response = client.post(
        "/oauth/revoke",
        data=form_body(token=token),
        content_type=FORM,
        HTTP_AUTHORIZATION=basic(owner.client_id, owner.secret),
    )

    assert response.status_code == 200
    assert response.content == b""
    assert not response.has_header("Content-Type")
    assert response["Cache-Control"] == "no-store"
