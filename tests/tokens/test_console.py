import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from audit.models import AuditEvent
from core.roles import AUDITORS
from tests.fixtures.core import console_login
from tokens.keyring import keyring_reset
from tokens.models import SigningKey

pytestmark = pytest.mark.django_db
URL = "/console/tokens/signingkey/"


def test_security_admin_sees_keys_without_private_material_and_revokes(
    client, admin_user, signing_key
):
    console_login(client, admin_user)

    page = client.get(URL)
    detail = client.get(f"{URL}{signing_key.pk}/change/")
    revoked = client.post(
        URL, {"action": "revoke_keys", "_selected_action": [signing_key.pk]}, follow=True
    )

    assert page.status_code == detail.status_code == revoked.status_code == 200
    assert signing_key.kid in page.content.decode()
    assert "private" not in detail.content.decode().lower()
    assert SigningKey.objects.get(pk=signing_key.pk).state == "revoked"
    event = AuditEvent.objects.get(event_type="key.revoked")
    assert (event.actor_kind, event.actor_id) == ("user", str(admin_user.pk))


def test_an_auditor_looks_but_cannot_revoke(client, signing_key):
    auditor = get_user_model().objects.create_user(
        username="auditor", password="correct horse battery", is_staff=True
    )
    auditor.groups.add(Group.objects.get(name=AUDITORS))
    console_login(client, auditor)

    page = client.get(URL)
    client.post(URL, {"action": "revoke_keys", "_selected_action": [signing_key.pk]})

    assert page.status_code == 200
    assert "revoke_keys" not in page.content.decode()
    assert SigningKey.objects.get(pk=signing_key.pk).state == "active"


def test_the_console_names_the_problem_of_a_distrusted_key(client, admin_user, signing_key):
    SigningKey.objects.filter(pk=signing_key.pk).update(algorithm="EdDSA")
    keyring_reset()
    console_login(client, admin_user)

    page = client.get(URL).content.decode()

    assert '<td class="field-problem">not_authentic</td>' in page
