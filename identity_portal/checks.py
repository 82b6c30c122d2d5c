"""System checks that refuse a production start on weak configuration.

Registered without a tag so every management command (migrate, serve) and the
WSGI entry point run them: a production process must not start at all with
generated, missing or short secrets, DEBUG on, SQLite, or a cache that the
other hosts do not share.
"""

from __future__ import annotations

from django.conf import settings
from django.core import checks

from identity_portal.server_secrets import MIN_KEY_BYTES, MIN_SECRET_KEY_LENGTH

# The caches every node shares. Any other (a file cache, local memory, a dummy)
# lives on one host: a change announced through it (a revoked key, a disabled
# machine, throttle counts) never reaches the others. An allow-list, so a new
# host-local backend is refused rather than missed.
SHARED_CACHES = frozenset({"identity_portal.cache.RedisCache"})


def _weak_secret_key(value: str) -> bool:
    return (
        len(value) < MIN_SECRET_KEY_LENGTH
        or len(set(value)) < 5
        or value.startswith("django-insecure-")
    )


@checks.register()
def production_configuration(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    if not settings.PRODUCTION:
        return []
    secrets = settings.SERVER_SECRETS
    errors: list[checks.CheckMessage] = []
    for name in secrets.missing:
        errors.append(
            checks.Error(
                f"{name} is not set.",
                hint="Production reads every server secret from the environment (see README).",
                id="identity_portal.E001",
            )
        )
    if "SECRET_KEY" not in secrets.missing and _weak_secret_key(secrets.secret_key):
        errors.append(
            checks.Error(
                f"SECRET_KEY is weak: use {MIN_SECRET_KEY_LENGTH}+ random characters.",
                id="identity_portal.E002",
            )
        )
    rings = {"SECRET_PEPPERS": secrets.peppers, "KEY_ENCRYPTION_KEYS": secrets.key_encryption_keys}
    for name, ring in rings.items():
        if name not in secrets.missing and any(len(v) < MIN_KEY_BYTES for v in ring.values()):
            errors.append(
                checks.Error(
                    f"{name} holds a key shorter than {MIN_KEY_BYTES} bytes.",
                    id="identity_portal.E003",
                )
            )
    if "AUDIT_SIGNING_KEY" not in secrets.missing and any(
        len(seed) != 32 for seed in secrets.audit_signing_keys or (b"",)
    ):
        errors.append(
            checks.Error(
                "AUDIT_SIGNING_KEY(S) must be 32-byte Ed25519 seeds, base64url.",
                id="identity_portal.E004",
            )
        )
    if settings.DEBUG:
        errors.append(checks.Error("DEBUG is on in production.", id="identity_portal.E005"))
    if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
        errors.append(
            checks.Error(
                "Production needs PostgreSQL: set DATABASE_URL.",
                id="identity_portal.E006",
            )
        )
    if not settings.ISSUER.startswith("https://"):
        errors.append(
            checks.Error("ISSUER must be an https:// URL in production.", id="identity_portal.E007")
        )
    return errors


@checks.register()
def production_shared_cache(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Production needs a cache every node shares, unless one host runs everything.

    The keyring's change marker, the machine cache and throttling all live in
    the cache: with a cache per host, a key revoked on one node keeps signing
    and a disabled machine keeps getting tokens on the others.
    """
    if not settings.PRODUCTION or settings.SINGLE_NODE:
        return []
    backend = settings.CACHES["default"]["BACKEND"]
    if backend in SHARED_CACHES:
        return []
    return [
        checks.Error(
            f"Production needs a cache shared by every node; the cache is {backend}.",
            hint=(
                "Set REDIS_URL or CACHE_URL to a redis:// URL. If one host runs every "
                "process (web and workers), set SINGLE_NODE=true instead."
            ),
            id="identity_portal.E008",
        )
    ]


@checks.register()
def production_passkeys(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    """Production should offer passkeys: a warning when its RP ID or origins rule them out.

    django-otp-webauthn's own origin checks are silenced (they would stop the
    embedded tier on http://127.0.0.1 from starting); where browsers cannot use
    passkeys the console simply does not offer them, which production should know.
    """
    # Imported here: this module loads before the app registry, the passkeys module after.
    from identity_portal.passkeys import passkeys_available

    if not settings.PRODUCTION or passkeys_available():
        return []
    return [
        checks.Warning(
            "Passkeys are off: WEBAUTHN_RP_ID is an IP address or a WEBAUTHN_ORIGINS entry is "
            "not https://.",
            hint="Set ISSUER to the console's https:// URL (or WEBAUTHN_RP_ID, WEBAUTHN_ORIGINS).",
            id="identity_portal.W009",
        )
    ]
