"""Bind each wrapped private key to its row's identity: kid and algorithm (issue 10).

Format 1 used the kid alone as the AES-GCM associated data. Format 2 binds a
versioned record of kid and algorithm (``tokens.key_material.signing_key_aad``); the
keyring decrypts format 2 only, so after this migration a row that was not
re-bound here is not trusted. A row is re-bound only if it is authentic in
format 1: it decrypts under its own KEK with its own kid, is a key of its
algorithm, and its kid is the thumbprint of its public key. Forged rows, rows
under a KEK this server lacks, and revoked keys (never to be trusted again)
are left as they are.

Runs with the server's KEKs (settings), like every command of the portal. No
audit event: the audit tables belong to the audit app and a migration must
not depend on their current shape; ``keys list`` shows the keys afterwards.
"""

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.db import migrations

from core import jose
from tokens import key_material

_NONCE_BYTES = 12


def _unwrap_format_1(blob: bytes, *, kek: bytes, kid: str):
    if len(blob) <= _NONCE_BYTES or not kid.isascii():
        return None
    try:
        der = AESGCM(kek).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], kid.encode("ascii"))
        return serialization.load_der_private_key(der, password=None)
    except (InvalidTag, ValueError, TypeError):
        return None


def _wrap_format_1(private_key, *, kek: bytes, kid: str) -> bytes:
    der = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(kek).encrypt(nonce, der, kid.encode("ascii"))


def rebind(apps, schema_editor):
    SigningKey = apps.get_model("tokens", "SigningKey")
    keks = settings.SERVER_SECRETS.key_encryption_keys
    for key in SigningKey.objects.exclude(state="revoked").order_by("id"):
        kek = keks.get(key.kek_id)
        if kek is None:
            continue
        private_key = _unwrap_format_1(bytes(key.private_key_wrapped), kek=kek, kid=key.kid)
        if private_key is None or not key_material.private_key_fits(private_key, key.algorithm):
            continue
        if jose.jwk_thumbprint(jose.public_jwk(private_key.public_key())) != key.kid:
            continue
        key.private_key_wrapped = key_material.private_key_wrap(
            private_key, kek=kek, kid=key.kid, algorithm=key.algorithm
        )
        key.save(update_fields=["private_key_wrapped"])


def unbind(apps, schema_editor):
    """Back to format 1 for the rows that authenticate in format 2."""
    SigningKey = apps.get_model("tokens", "SigningKey")
    keks = settings.SERVER_SECRETS.key_encryption_keys
    for key in SigningKey.objects.exclude(state="revoked").order_by("id"):
        kek = keks.get(key.kek_id)
        if kek is None:
            continue
        try:
            private_key = key_material.private_key_unwrap(
                bytes(key.private_key_wrapped), kek=kek, kid=key.kid, algorithm=key.algorithm
            )
        except InvalidTag:
            continue
        key.private_key_wrapped = _wrap_format_1(private_key, kek=kek, kid=key.kid)
        key.save(update_fields=["private_key_wrapped"])


class Migration(migrations.Migration):
    dependencies = [("tokens", "0002_lean_indexes")]

    operations = [migrations.RunPython(rebind, unbind, elidable=False)]
