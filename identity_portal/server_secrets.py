"""Server secrets: read from the environment, or generated once into ``var/``.

Four secrets never live in code: Django's ``SECRET_KEY``, the peppers that key
client-secret digests, the key-encryption keys that wrap signing keys, and the
audit signing keys (``AUDIT_SIGNING_KEYS``, or the single ``AUDIT_SIGNING_KEY``).
Production passes them in the environment (a system check refuses to start
without them). The embedded default generates them once into
``var/secrets.json`` with mode 0600 and reuses them, so a second ``make run``
still verifies yesterday's secrets and decrypts yesterday's keys.

Keyed lists are written ``id:base64url`` separated by commas, newest first:
the first entry is the one that writes (hashes, encrypts), every entry reads.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from core import jose

MIN_KEY_BYTES = 32
MIN_SECRET_KEY_LENGTH = 50


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


class SecretFormatError(ValueError):
    """A server secret in the environment cannot be parsed."""


def b64url_decode(value: str) -> bytes:
    """Base64url as documented; padded values, the standard alphabet (``+``, ``/``) and
    non-zero trailing bits too.

    Earlier releases accepted all three, so an operator's ``openssl rand -base64 32``
    or a hand-made value keeps working: a server secret is read, never compared as
    text. ``core.jose`` is strict (one spelling per JWS segment).
    """
    normalized = value.rstrip("=").replace("+", "-").replace("/", "_")
    unused = 6 * len(normalized) % 8  # low bits of the last character that carry no byte
    if unused and normalized[-1] in _B64URL_ALPHABET:
        # Cleared: the one spelling core.jose reads.
        last = _B64URL_ALPHABET.index(normalized[-1]) >> unused << unused
        normalized = normalized[:-1] + _B64URL_ALPHABET[last]
    try:
        return jose.b64url_decode(normalized)
    except ValueError as exc:
        raise SecretFormatError("not base64url") from exc


def parse_keyring(value: str) -> dict[str, bytes]:
    """Parse ``id:base64url,id:base64url`` into an ordered dict, newest first."""
    ring: dict[str, bytes] = {}
    for item in filter(None, (part.strip() for part in value.split(","))):
        key_id, sep, encoded = item.partition(":")
        if not sep or not key_id or not encoded:
            raise SecretFormatError("keyring entries are id:base64url")
        if key_id in ring:
            raise SecretFormatError(f"duplicate key id {key_id!r}")
        ring[key_id] = b64url_decode(encoded)
    return ring


@dataclass(frozen=True)
class ServerSecrets:
    # repr=False: `manage.py diffsettings`, debug pages and tracebacks print reprs.
    secret_key: str = field(repr=False)
    peppers: dict[str, bytes] = field(repr=False)
    key_encryption_keys: dict[str, bytes] = field(repr=False)
    # Ed25519 seeds, newest first: the first signs checkpoints and manifests, the
    # others stay so that what they signed before a rotation still verifies.
    audit_signing_keys: tuple[bytes, ...] = field(repr=False)
    # Names of the secrets that came from neither the environment nor var/.
    missing: tuple[str, ...] = ()

    @property
    def audit_signing_key(self) -> bytes:
        """The audit key that signs now (the newest)."""
        return self.audit_signing_keys[0] if self.audit_signing_keys else b""


_ENV_NAMES = ("SECRET_KEY", "SECRET_PEPPERS", "KEY_ENCRYPTION_KEYS", "AUDIT_SIGNING_KEY")


def _generate() -> dict[str, str]:
    return {
        "SECRET_KEY": secrets.token_urlsafe(64),
        "SECRET_PEPPERS": f"p1:{jose.b64url(secrets.token_bytes(32))}",
        "KEY_ENCRYPTION_KEYS": f"k1:{jose.b64url(secrets.token_bytes(32))}",
        "AUDIT_SIGNING_KEY": jose.b64url(secrets.token_bytes(32)),
    }


def _load_or_create_file(path: Path) -> dict[str, str]:
    """Read the generated secrets, creating the file (0600) the first time.

    ``O_EXCL`` makes concurrent first starts agree on one file: the loser
    reads what the winner wrote.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return json.loads(path.read_text())
    generated = _generate()
    with os.fdopen(fd, "w") as handle:
        json.dump(generated, handle)
    return generated


def parse_audit_keys(value: str) -> tuple[bytes, ...]:
    """``AUDIT_SIGNING_KEYS``: base64url seeds, newest first, each optionally ``label:``-prefixed.

    The label is only the operator's note (the published key id is the RFC 7638
    thumbprint of the public key), so the format reads like ``SECRET_PEPPERS``.
    """
    seeds: list[bytes] = []
    for item in filter(None, (part.strip() for part in value.split(","))):
        _, _, encoded = item.rpartition(":")
        seed = b64url_decode(encoded)
        if seed in seeds:
            raise SecretFormatError("AUDIT_SIGNING_KEYS lists a key twice")
        seeds.append(seed)
    return tuple(seeds)


def load_server_secrets(environ: dict[str, str], var_dir: Path, *, generate: bool) -> ServerSecrets:
    """Collect the server secrets: environment first, then the generated file.

    With ``generate`` off (production) nothing is written to disk and absent
    values are reported in ``missing`` for the system check to refuse.
    """
    values = {name: environ[name] for name in _ENV_NAMES if environ.get(name)}
    # The list of audit keys (rotation) takes the place of the single-key variable.
    if environ.get("AUDIT_SIGNING_KEYS", "").strip():
        values["AUDIT_SIGNING_KEY"] = environ["AUDIT_SIGNING_KEYS"]
    missing = tuple(name for name in _ENV_NAMES if name not in values)
    if missing and generate:
        stored = _load_or_create_file(var_dir / "secrets.json")
        for name in missing:
            values[name] = stored[name]
        missing = ()
    return ServerSecrets(
        secret_key=values.get("SECRET_KEY", ""),
        peppers=parse_keyring(values.get("SECRET_PEPPERS", "")),
        key_encryption_keys=parse_keyring(values.get("KEY_ENCRYPTION_KEYS", "")),
        audit_signing_keys=parse_audit_keys(values.get("AUDIT_SIGNING_KEY", "")),
        missing=missing,
    )
