"""Audit signing keys that rotate: the newest signs, every listed key verifies."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings as django_settings

from audit import chain
from audit.context import Actor
from audit.selectors import AuditFilters, audit_chain_verify
from audit.services import (
    audit_checkpoint_create,
    audit_export,
    audit_seal_pending,
    manifest_path_for,
)
from core.jose import b64url
from identity_portal.server_secrets import (
    SecretFormatError,
    load_server_secrets,
    parse_audit_keys,
)
from tests.audit.conftest import verify_command

SCRIPT = Path(django_settings.BASE_DIR) / "scripts" / "verify_audit_export.py"
NEW_SEED = b"\x07" * 32


def _kid(seed: bytes) -> str:
    return chain.public_jwk(Ed25519PrivateKey.from_private_bytes(seed).public_key())["kid"]


def _rotate(settings, *seeds: bytes) -> None:
    settings.SERVER_SECRETS = dataclasses.replace(
        settings.SERVER_SECRETS, audit_signing_keys=tuple(seeds)
    )


@pytest.fixture
def old_seed():
    return django_settings.SERVER_SECRETS.audit_signing_key


def test_audit_signing_keys_list_wins_over_the_single_key(tmp_path):
    environ = {
        "AUDIT_SIGNING_KEY": b64url(b"a" * 32),
        "AUDIT_SIGNING_KEYS": f"a2:{b64url(b'b' * 32)}, {b64url(b'c' * 32)}",
    }

    secrets = load_server_secrets(environ, tmp_path, generate=False)

    assert secrets.audit_signing_keys == (b"b" * 32, b"c" * 32)
    assert secrets.audit_signing_key == b"b" * 32
    assert "AUDIT_SIGNING_KEY" not in secrets.missing


def test_the_single_audit_key_still_works(tmp_path):
    secrets = load_server_secrets(
        {"AUDIT_SIGNING_KEY": b64url(b"a" * 32)}, tmp_path, generate=False
    )

    assert secrets.audit_signing_keys == (b"a" * 32,)


@pytest.mark.parametrize(
    ("value", "message"),
    [("k1:%%%", "not base64url"), (f"{'YQ' * 22},{'YQ' * 22}", "lists a key twice")],
)
def test_malformed_audit_keys_are_refused(value, message):
    with pytest.raises(SecretFormatError, match=message):
        parse_audit_keys(value)


def test_after_rotation_old_and_new_checkpoints_verify(make_events, settings, old_seed):
    make_events(2)
    audit_seal_pending()
    before = audit_checkpoint_create()
    _rotate(settings, NEW_SEED, old_seed)
    make_events(2)
    audit_seal_pending()
    after = audit_checkpoint_create()

    report = audit_chain_verify()

    assert (before.key_id, after.key_id) == (_kid(old_seed), _kid(NEW_SEED))
    assert report.ok
    assert (report.checkpoints, report.head_position) == (2, 4)
    assert verify_command()[0] == 0


def test_a_key_dropped_from_the_list_no_longer_verifies(make_events, settings, old_seed):
    make_events(1)
    audit_seal_pending()
    audit_checkpoint_create()
    _rotate(settings, NEW_SEED)

    report = audit_chain_verify()

    assert (
        report.problem.message == "a checkpoint here has an invalid signature or an untrusted key"
    )


def test_a_retired_key_cannot_sign_after_its_successor(make_events, settings, old_seed):
    make_events(1)
    audit_seal_pending()
    _rotate(settings, NEW_SEED, old_seed)
    audit_checkpoint_create()
    # A leaked retired key signs a checkpoint after the newer key took over.
    _rotate(settings, old_seed, NEW_SEED)
    late = audit_checkpoint_create()
    _rotate(settings, NEW_SEED, old_seed)

    problem = audit_chain_verify().problem

    assert problem.message == f"signed by key {_kid(old_seed)} after a newer key took over"
    assert problem.checkpoint.startswith(f"checkpoint id {late.pk} (scheduled, position 1,")


def test_audit_keys_json_lists_current_and_retired_keys_with_their_periods(
    make_events, settings, old_seed, client
):
    make_events(1)
    audit_seal_pending()
    first_old = audit_checkpoint_create()
    last_old = audit_checkpoint_create()
    _rotate(settings, NEW_SEED, old_seed)
    first_new = audit_checkpoint_create()

    keys = client.get("/.well-known/audit-keys.json").json()["keys"]

    assert [(key["kid"], key["status"]) for key in keys] == [
        (_kid(NEW_SEED), "current"),
        (_kid(old_seed), "retired"),
    ]
    assert (keys[0]["not_before"], keys[0]["not_after"]) == (
        chain.format_timestamp(first_new.created_at),
        None,
    )
    assert (keys[1]["not_before"], keys[1]["not_after"]) == (
        chain.format_timestamp(first_old.created_at),
        chain.format_timestamp(last_old.created_at),
    )
    assert all("d" not in key for key in keys)


def test_an_export_made_before_rotation_verifies_against_the_new_audit_keys(
    make_events, settings, old_seed, client, tmp_path
):
    make_events(3)
    audit_seal_pending()
    out = tmp_path / "before.jsonl"
    audit_export(fmt="jsonl", filters=AuditFilters(), out_path=out, actor=Actor.cli("test"))
    _rotate(settings, NEW_SEED, old_seed)
    published = tmp_path / "audit-keys.json"
    published.write_bytes(client.get("/.well-known/audit-keys.json").content)

    result = subprocess.run(
        [sys.executable, "-I", str(SCRIPT), str(out), "--jwks", str(published)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )

    assert json.loads(manifest_path_for(out).read_text())["key_id"] == _kid(old_seed)
    assert result.returncode == 0, result.stdout
    assert result.stdout == f"OK 3 events, positions 1..3, signed by key {_kid(old_seed)}\n"
