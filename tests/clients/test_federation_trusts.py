"""Federation trusts: added and removed through audited services, bound to the server secrets."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.utils import timezone

from audit.models import AuditEvent
from clients.federation import selectors
from clients.federation.conditions import ConditionError, condition_check, condition_holds
from clients.federation.services import trust_add, trust_remove
from clients.federation.templates import GITHUB_ISSUER, TemplateError, trust_template
from clients.models import FederationTrust
from core import jose

pytestmark = pytest.mark.django_db

CONDITION = 'claims.repository == "acme/billing" && claims.ref == "refs/heads/main"'


@pytest.fixture
def machine(machine_and_secret, clean_cache):
    return machine_and_secret[0]


def _github_trust(machine, cli_actor, **overrides):
    fields = {
        "issuer": GITHUB_ISSUER,
        "audience": "https://portal.example",
        "condition": CONDITION,
        "template": "github",
    }
    return trust_add(actor=cli_actor, machine=machine, **{**fields, **overrides})


def test_a_trust_is_added_bound_and_audited(machine, cli_actor):
    trust = _github_trust(machine, cli_actor)

    assert trust.issuer == GITHUB_ISSUER
    assert trust.pepper_id == "p2"  # the newest pepper binds
    assert selectors.trust_is_authentic(trust)
    event = AuditEvent.objects.get(event_type="trust.added")
    assert event.target_id == machine.client_id
    assert event.details == {
        "trust_id": str(trust.uid),
        "issuer": GITHUB_ISSUER,
        "audience": "https://portal.example",
        "subject": "",
        "condition": CONDITION,
        "pasted_jwks": False,
        "template": "github",
    }
    (cached,) = selectors.machine_trusts(client_id=machine.client_id)
    assert cached == selectors.CachedTrust(
        uid=str(trust.uid),
        issuer=GITHUB_ISSUER,
        audience="https://portal.example",
        subject="",
        condition=CONDITION,
        jwks="",
        authentic=True,
    )


@pytest.mark.django_db(transaction=True)
def test_a_removed_trust_leaves_the_cached_trusts_at_commit(machine, cli_actor):
    trust = _github_trust(machine, cli_actor)
    assert len(selectors.machine_trusts(client_id=machine.client_id)) == 1  # now cached

    trust_remove(actor=cli_actor, trust=trust)

    assert selectors.machine_trusts(client_id=machine.client_id) == ()
    assert FederationTrust.objects.count() == 0
    event = AuditEvent.objects.get(event_type="trust.removed")
    assert event.details["trust_id"] == str(trust.uid)


def test_a_reader_that_read_before_a_trust_was_removed_cannot_serve_it_after(
    machine, cli_actor, django_capture_on_commit_callbacks, monkeypatch
):
    with django_capture_on_commit_callbacks(execute=True):
        trust = _github_trust(machine, cli_actor)
    load = selectors._load

    def load_then_remove(client_id):
        monkeypatch.setattr(selectors, "_load", load)  # once
        read = load(client_id)  # the reader has the rows...
        with django_capture_on_commit_callbacks(execute=True):
            trust_remove(actor=cli_actor, trust=trust)  # ...the removal commits...
        return read  # ...and the reader stores what it read

    monkeypatch.setattr(selectors, "_load", load_then_remove)
    in_flight = selectors.machine_trusts(client_id=machine.client_id)
    after = [selectors.machine_trusts(client_id=machine.client_id) for _ in range(2)]

    assert [t.uid for t in in_flight] == [str(trust.uid)]
    assert after == [(), ()]


def test_an_added_trust_is_read_by_the_next_request_then_cached(
    machine, cli_actor, django_capture_on_commit_callbacks, monkeypatch
):
    assert selectors.machine_trusts(client_id=machine.client_id) == ()  # cached: none
    with django_capture_on_commit_callbacks(execute=True):
        trust = _github_trust(machine, cli_actor)
    loads = []
    load = selectors._load
    monkeypatch.setattr(
        selectors, "_load", lambda client_id: loads.append(client_id) or load(client_id)
    )

    found = [selectors.machine_trusts(client_id=machine.client_id) for _ in range(3)]

    assert [[t.uid for t in trusts] for trusts in found] == [[str(trust.uid)]] * 3
    assert loads == [machine.client_id]
    # The previous release's key is told with a tombstone, as that release expects.
    assert cache.get(selectors.trusts_cache_key(machine.client_id, 1)) == "tombstone"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"condition": "", "subject": ""}, "subject"),  # would admit every repository
        ({"condition": "claims.repository =="}, "condition"),
        ({"condition": "secrets.token == 1"}, "condition"),
        ({"issuer": "http://issuer.example"}, "issuer"),
        ({"issuer": "https://user@issuer.example"}, "issuer"),
        ({"issuer": ""}, "issuer"),
        ({"audience": ""}, "audience"),
        ({"audience": "a\x00b"}, "audience"),
        ({"subject": "x" * 256}, "subject"),
        ({"jwks": "{not json"}, "jwks"),
        ({"jwks": '{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}'}, "jwks"),
        ({"jwks": "[" * 100000}, "jwks"),
        ({"template": "jenkins"}, "template"),
    ],
)
def test_refused_input_changes_nothing(machine, cli_actor, overrides, field):
    events = AuditEvent.objects.count()

    with pytest.raises(ValidationError) as refused:
        _github_trust(machine, cli_actor, **overrides)

    assert field in refused.value.message_dict
    assert FederationTrust.objects.count() == 0
    assert AuditEvent.objects.count() == events


def test_the_same_trust_twice_is_refused(machine, cli_actor):
    _github_trust(machine, cli_actor)
    with pytest.raises(ValidationError):
        _github_trust(machine, cli_actor)
    assert FederationTrust.objects.count() == 1


def test_a_pasted_jwks_keeps_public_members_only(machine, cli_actor):
    key = ec.generate_private_key(ec.SECP256R1())
    public = {**jose.public_jwk(key.public_key()), "kid": "k1"}
    private_value = key.private_numbers().private_value.to_bytes(32, "big")
    pasted = {"keys": [public, {**public, "kid": "k2", "d": jose.b64url(private_value)}]}

    trust = trust_add(
        actor=cli_actor,
        machine=machine,
        issuer="https://kubernetes.default.svc",
        audience="https://portal.example",
        subject="system:serviceaccount:billing:invoicer",
        jwks=json.dumps(pasted),
    )

    assert json.loads(trust.jwks) == {"keys": [public]}
    assert '"d"' not in trust.jwks


def _planted(machine, **fields):
    values = {
        "issuer": GITHUB_ISSUER,
        "audience": "https://portal.example",
        "subject": "",
        "condition": "true == true",
        "jwks": "",
        "pepper_id": "p2",
        "binding": "0" * 64,
        "created_at": timezone.now(),
    }
    return FederationTrust.objects.create(machine=machine, **{**values, **fields})


def test_a_trust_inserted_in_the_database_is_not_authentic(machine):
    _planted(machine)

    (cached,) = selectors.machine_trusts(client_id=machine.client_id)

    assert cached.authentic is False


def test_an_edited_or_moved_trust_is_not_authentic(machine, cli_actor, scope_read, audience_api):
    from clients.services import machine_register

    other, _ = machine_register(
        actor=cli_actor, name="other", scopes=["read"], audiences=["https://api.example"]
    )
    edited = _github_trust(machine, cli_actor)
    moved = _github_trust(other, cli_actor, condition='claims.repository == "acme/other"')
    FederationTrust.objects.filter(pk=edited.pk).update(condition="true == true")
    FederationTrust.objects.filter(pk=moved.pk).update(machine=machine)

    trusts = FederationTrust.objects.select_related("machine").order_by("id")
    assert [selectors.trust_is_authentic(trust) for trust in trusts] == [False, False]


def test_a_retired_pepper_authenticates_no_trust(machine, cli_actor, settings):
    trust = _github_trust(machine, cli_actor)
    FederationTrust.objects.filter(pk=trust.pk).update(pepper_id="gone")
    trust.refresh_from_db()
    assert selectors.trust_is_authentic(trust) is False


def test_a_machine_is_found_by_issuer_and_subject_only_when_unique(machine, cli_actor):
    subject = "system:serviceaccount:billing:invoicer"
    _github_trust(machine, cli_actor, subject=subject, condition="")
    assert (
        selectors.machine_for_issuer_subject(issuer=GITHUB_ISSUER, subject=subject)
        == machine.client_id
    )
    assert selectors.machine_for_issuer_subject(issuer=GITHUB_ISSUER, subject="other") is None
    assert selectors.machine_for_issuer_subject(issuer=GITHUB_ISSUER, subject="") is None


# --- templates and conditions -------------------------------------------------


def test_templates_give_the_platform_shapes():
    github = trust_template("github", repository="acme/billing", ref="refs/heads/main")
    assert (github.issuer, github.subject, github.condition) == (GITHUB_ISSUER, "", CONDITION)
    gitlab = trust_template("gitlab", project_path="acme/billing", ref="main")
    assert gitlab.issuer == "https://gitlab.com"
    assert gitlab.condition == 'claims.project_path == "acme/billing" && claims.ref == "main"'
    kubernetes = trust_template(
        "kubernetes", issuer="https://k8s.example", namespace="billing", service_account="inv"
    )
    assert kubernetes.subject == "system:serviceaccount:billing:inv"
    assert kubernetes.condition == ""


def test_a_template_value_cannot_escape_its_literal():
    shape = trust_template("github", repository='acme/x" || true || "')
    assert condition_check(shape.condition) == shape.condition
    assert condition_holds(shape.condition, {"repository": "acme/billing"}) is False
    assert condition_holds(shape.condition, {"repository": 'acme/x" || true || "'}) is True


@pytest.mark.parametrize(
    ("name", "values"),
    [
        ("github", {}),
        ("github", {"repository": "no-slash"}),
        ("kubernetes", {"namespace": "a", "service_account": "b"}),
        ("kubernetes", {"issuer": "https://k", "namespace": "a:b", "service_account": "c"}),
        ("circleci", {}),
    ],
)
def test_templates_refuse_missing_or_bad_values(name, values):
    with pytest.raises(TemplateError):
        trust_template(name, **values)


@pytest.mark.parametrize(
    "source",
    [
        "foo == 1",
        "claims.x.all(a, a.all(b, b.all(c, c)))",
        'timestamp("2020-01-01T00:00:00Z") < claims.t',
        "claims.x ==",
        "x" * 1025,
    ],
)
def test_conditions_refused_when_saved(source):
    with pytest.raises(ConditionError):
        condition_check(source)


@pytest.mark.parametrize(
    ("claims", "holds"),
    [
        ({"repository": "acme/billing", "ref": "refs/heads/main"}, True),
        ({"repository": "acme/billing", "ref": "refs/heads/dev"}, False),
        ({"repository": "acme/billing"}, False),  # a missing claim is an error: false
        ({"repository": 1, "ref": "refs/heads/main"}, False),
        ({"repository": "acme/billing", "ref": "refs/heads/main", "l": list(range(65))}, False),
    ],
)
def test_a_condition_holds_only_when_true(claims, holds):
    assert condition_holds(CONDITION, claims) is holds


def test_a_condition_that_does_not_yield_a_boolean_does_not_hold():
    assert condition_holds('claims.repository + ""', {"repository": "acme"}) is False
    assert condition_holds("claims.n / 0 == 1", {"n": 1}) is False


def test_uid_is_in_the_binding(machine, cli_actor):
    trust = _github_trust(machine, cli_actor)
    FederationTrust.objects.filter(pk=trust.pk).update(uid=uuid.uuid4())
    trust.refresh_from_db()
    assert selectors.trust_is_authentic(trust) is False


def test_the_web_application_loads_cel_without_its_command_line():
    """A fresh process, as a web worker starts: conditions work, cel's CLI stack is not loaded."""
    script = (
        "import sys\n"
        "from identity_portal.wsgi import application\n"
        "from clients.federation.conditions import condition_holds\n"
        "holds = condition_holds('claims.sub == \"a\"', {'sub': 'a'})\n"
        "fails = condition_holds('claims.sub == \"a\"', {'sub': 'b'})\n"
        "stack = ('cel.cli', 'typer', 'prompt_toolkit', 'rich')\n"
        "loaded = sorted(m for m in stack if m in sys.modules)\n"
        "print(holds, fails, loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False, timeout=120
    )

    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True False []"
