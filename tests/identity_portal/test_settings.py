"""Server secrets and the production start-up refusal, run as real processes."""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from core.jose import b64url
from identity_portal.server_secrets import (
    SecretFormatError,
    load_server_secrets,
    parse_keyring,
)

ROOT = Path(__file__).resolve().parents[2]

STRONG = {
    "SECRET_KEY": "s" * 10 + "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ",
    "SECRET_PEPPERS": f"p1:{b64url(b'a' * 32)}",
    "KEY_ENCRYPTION_KEYS": f"k1:{b64url(b'b' * 32)}",
    "AUDIT_SIGNING_KEY": b64url(b"c" * 32),
    "DATABASE_URL": "postgres://portal@127.0.0.1:5432/portal",
    "ISSUER": "https://id.example.com",
    "CACHE_URL": "redis://127.0.0.1:6379/0",
}


def _manage(args: list[str], extra_env: dict[str, str], tmp_path: Path):
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {*STRONG, "DJANGO_SETTINGS_MODULE", "VAR_DIR", "REDIS_URL", "CACHE_URL"}
    }
    env.update({"VAR_DIR": str(tmp_path / "var"), **extra_env})
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_embedded_default_generates_secrets_once_with_mode_0600(tmp_path):
    first = load_server_secrets({}, tmp_path, generate=True)
    second = load_server_secrets({}, tmp_path, generate=True)

    path = tmp_path / "secrets.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first == second
    assert len(first.secret_key) >= 50
    assert [len(v) for v in first.peppers.values()] == [32]
    assert [len(v) for v in first.key_encryption_keys.values()] == [32]
    assert len(first.audit_signing_key) == 32
    assert first.missing == ()


def test_environment_wins_over_the_generated_file(tmp_path):
    load_server_secrets({}, tmp_path, generate=True)
    from_env = load_server_secrets({"SECRET_KEY": STRONG["SECRET_KEY"]}, tmp_path, generate=True)

    assert from_env.secret_key == STRONG["SECRET_KEY"]
    stored = json.loads((tmp_path / "secrets.json").read_text())
    assert from_env.peppers == parse_keyring(stored["SECRET_PEPPERS"])


def test_production_generates_nothing_and_reports_missing(tmp_path):
    loaded = load_server_secrets({}, tmp_path, generate=False)

    assert loaded.missing == (
        "SECRET_KEY",
        "SECRET_PEPPERS",
        "KEY_ENCRYPTION_KEYS",
        "AUDIT_SIGNING_KEY",
    )
    assert not (tmp_path / "secrets.json").exists()


def test_keyring_keeps_order_newest_first():
    ring = parse_keyring(f"new:{b64url(b'n' * 32)}, old:{b64url(b'o' * 32)}")

    assert list(ring) == ["new", "old"]
    assert ring["old"] == b"o" * 32


def test_keyring_values_padded_or_in_the_standard_alphabet_still_parse():
    key = bytes(range(250, 256)) * 5 + b"\xfb\xff"  # 32 bytes whose base64 has + and /
    standard = base64.b64encode(key).decode()
    assert "+" in standard and "/" in standard and standard.endswith("=")

    ring = parse_keyring(f"std:{standard},url:{base64.urlsafe_b64encode(key).decode()}")

    assert ring == {"std": key, "url": key}


def test_keyring_values_with_other_trailing_bits_still_parse_to_the_same_key():
    # core.jose refuses such spellings of a JWS segment; a server secret is only read.
    key = b"k" * 32
    canonical = b64url(key)
    assert canonical.endswith("s")  # 43 characters: the last one has 2 unused bits
    re_spelled = canonical[:-1] + "v"  # the same 6 bits but the last two
    assert base64.urlsafe_b64decode(re_spelled + "=") == key

    assert parse_keyring(f"a:{re_spelled}") == {"a": key}


@pytest.mark.parametrize("value", ["nocolon", ":abc", "id:", "a:AAAA,a:BBBB", "id:***"])
def test_malformed_keyring_is_refused(value):
    with pytest.raises(SecretFormatError):
        parse_keyring(value)


def test_production_with_proper_values_passes_check_deploy(tmp_path):
    result = _manage(
        ["check", "--deploy", "--fail-level", "WARNING"],
        {"DJANGO_ENV": "production", **STRONG},
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert not (tmp_path / "var" / "secrets.json").exists()


def test_production_refuses_missing_secrets_and_sqlite(tmp_path):
    result = _manage(["check"], {"DJANGO_ENV": "production"}, tmp_path)

    assert result.returncode == 1
    for code in ("E001", "E006", "E007"):
        assert f"identity_portal.{code}" in result.stderr
    assert result.stderr.count("identity_portal.E001") == 4


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"SECRET_KEY": "django-insecure-" + "x" * 50}, "E002"),
        ({"SECRET_KEY": "short"}, "E002"),
        ({"SECRET_PEPPERS": f"p1:{b64url(b'x' * 16)}"}, "E003"),
        ({"KEY_ENCRYPTION_KEYS": f"k1:{b64url(b'x' * 8)}"}, "E003"),
        ({"AUDIT_SIGNING_KEY": b64url(b"x" * 31)}, "E004"),
        ({"DEBUG": "1"}, "E005"),
    ],
)
def test_production_refuses_weak_values(tmp_path, override, code):
    result = _manage(["check"], {"DJANGO_ENV": "production", **STRONG, **override}, tmp_path)

    assert result.returncode == 1
    assert f"identity_portal.{code}" in result.stderr
    # The refusal names the variable, never its value.
    for value in override.values():
        if len(value) > 8:
            assert value not in result.stderr


def test_malformed_secret_in_environment_refuses_to_start(tmp_path):
    result = _manage(["check"], {**STRONG, "SECRET_PEPPERS": "not-a-keyring"}, tmp_path)

    assert result.returncode == 1
    assert "A server secret in the environment is malformed" in result.stderr
    assert "not-a-keyring" not in result.stderr


def test_server_secrets_never_show_in_their_repr(tmp_path):
    loaded = load_server_secrets({}, tmp_path, generate=True)

    shown = repr(loaded)

    assert loaded.secret_key not in shown
    for ring in (loaded.peppers, loaded.key_encryption_keys):
        for key in ring.values():
            assert repr(key) not in shown
    assert repr(loaded.audit_signing_key) not in shown
    assert shown == "ServerSecrets(missing=())"


def test_diffsettings_prints_no_pepper_or_key(tmp_path):
    # (SECRET_KEY is Django's own setting and diffsettings shows it, as in any Django.)
    result = _manage(["diffsettings"], {}, tmp_path)

    assert result.returncode == 0, result.stderr
    stored = json.loads((tmp_path / "var" / "secrets.json").read_text())
    for name in ("SECRET_PEPPERS", "KEY_ENCRYPTION_KEYS", "AUDIT_SIGNING_KEY"):
        value = stored[name]
        assert value.split(":")[-1] not in result.stdout
