"""Settings for the Machine Identity Portal, all read from the environment.

Every variable is documented in README.md. Defaults give the embedded tier
(SQLite, a filesystem broker, a file cache, secrets generated under ``var/``);
``DJANGO_ENV=production`` switches the defaults to the safe ones and the
``identity_portal`` system checks refuse to start on anything weak.
"""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from identity_portal.server_secrets import SecretFormatError, load_server_secrets

BASE_DIR = Path(__file__).resolve().parent.parent
ENV = os.environ


def env_bool(name: str, default: bool) -> bool:
    value = ENV.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = ENV.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer") from exc


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in ENV.get(name, default).split(",") if item.strip()]


DJANGO_ENV = ENV.get("DJANGO_ENV", "development")
PRODUCTION = DJANGO_ENV == "production"
VAR_DIR = Path(ENV.get("VAR_DIR", BASE_DIR / "var")).resolve()
VAR_DIR.mkdir(parents=True, exist_ok=True)

try:
    SERVER_SECRETS = load_server_secrets(ENV, VAR_DIR, generate=not PRODUCTION)
except SecretFormatError as exc:
    raise ImproperlyConfigured(f"A server secret in the environment is malformed: {exc}") from exc

SECRET_KEY = SERVER_SECRETS.secret_key
DEBUG = env_bool("DEBUG", False)

PORT = env_int("PORT", 8000)
# The default issuer follows PORT, so `PORT=8080 make run` alone gives discovery,
# tokens and the audit API audience that agree with where the portal listens.
ISSUER = ENV.get("ISSUER", f"http://127.0.0.1:{PORT}").rstrip("/")
_issuer_host = urlsplit(ISSUER).hostname or "127.0.0.1"
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", f"{_issuer_host},127.0.0.1,localhost")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", ISSUER)

INSTALLED_APPS = [
    # First, so that its audited createsuperuser and changepassword commands
    # take the place of django.contrib.auth's (the first app that names a command wins).
    "identity_portal",
    "identity_portal.apps.ConsoleAdminConfig",  # django.contrib.admin with the console's site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Second factor of console sign-in: TOTP devices and one-time recovery codes.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    # Passkeys and security keys (WebAuthn) as the other kind of second factor.
    "django_otp_webauthn",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "oauth2_provider",
    "jobs",
    "audit",
    "notifications",
    "clients",
    "tokens",
]

MIDDLEWARE = [
    "identity_portal.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "identity_portal.middleware.SecurityHeadersMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "identity_portal.console_session.ConsoleSessionMiddleware",
    "identity_portal.console_audit.ConsoleRefusalMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "identity_portal.urls"
WSGI_APPLICATION = "identity_portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------
DATABASE_URL = ENV.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'portal.sqlite3'}")
# PostgreSQL: the role that owns the schema, used by `manage.py migrate` and `db_roles`
# only; DATABASE_URL is then the least-privilege runtime role (identity_portal.database_roles).
MIGRATION_DATABASE_URL = ENV.get("MIGRATION_DATABASE_URL", "")
DATABASES = {
    "default": dj_database_url.parse(
        DATABASE_URL,
        # Persistent connections: a new connection per token request would
        # double the hot path's round trips.
        conn_max_age=env_int("CONN_MAX_AGE", 60),
        # Off by default: the check costs a SELECT 1 per request. After a
        # database restart the first request on a stale connection fails (the
        # token endpoint answers 503 temporarily_unavailable) and the
        # connection is replaced.
        conn_health_checks=env_bool("CONN_HEALTH_CHECKS", False),
    )
}
# The token insert (one statement per token) is prepared once per connection.
# Off only behind a pooler that cannot keep prepared statements (PgBouncer
# before 1.21 in transaction mode).
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
if DATABASE_PREPARED_STATEMENTS and DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # Django turns psycopg's statement preparation off entirely (threshold None).
    # A threshold no query reaches lets the token insert ask for it explicitly
    # (tokens.services) while every other query stays unprepared, as before.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = 2**31 - 1
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    # A database host that vanishes must not hold a web thread for the kernel's
    # default of hours: connecting gives up after 5 s, an established
    # connection is probed after 60 s of silence and dropped after 3 lost probes.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"connect_timeout": 5, "keepalives": 1, "keepalives_idle": 60}
        | {"keepalives_interval": 10, "keepalives_count": 3}
    )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web workers and the Celery worker share one file: WAL lets readers
    # proceed during a write, IMMEDIATE transactions and a busy timeout turn
    # "database is locked" into a short wait.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache: shared by every worker process --------------------------------
# Our backends store authenticated JSON, never pickles (identity_portal/cache.py); a
# system check refuses Django's own pickling backends here.
REDIS_URL = ENV.get("REDIS_URL", "")
CACHE_URL = ENV.get("CACHE_URL", REDIS_URL)
if CACHE_URL.startswith(("redis://", "rediss://", "unix://")):
    CACHES = {
        "default": {
            "BACKEND": "identity_portal.cache.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": "mip",
            "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
        }
    }
elif CACHE_URL:
    raise ImproperlyConfigured("CACHE_URL must be a redis:// URL (or empty for the file cache)")
else:
    CACHES = {
        "default": {
            "BACKEND": "identity_portal.cache.FileBasedCache",
            "LOCATION": str(VAR_DIR / "cache"),
        }
    }

# One host runs every process: a file cache is then shared by all of them, and
# production may start without Redis (checked in identity_portal.checks).
SINGLE_NODE = env_bool("SINGLE_NODE", False)

# --- Celery ---------------------------------------------------------------
CELERY_BROKER_URL = ENV.get("CELERY_BROKER_URL") or REDIS_URL or "filesystem://"
CELERY_BROKER_DIR = VAR_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(CELERY_BROKER_DIR / "queue"),
        "data_folder_out": str(CELERY_BROKER_DIR / "queue"),
        "processed_folder": str(CELERY_BROKER_DIR / "processed"),
        "control_folder": str(CELERY_BROKER_DIR / "control"),
        "store_processed": False,
    }
    for _folder in ("queue", "processed", "control"):
        (CELERY_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"socket_connect_timeout": 2, "socket_timeout": 5}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Anyone who can write to the broker must not be able to run code in a worker: JSON
# messages only, never pickle (identity_portal/cache.py does the same for the cache).
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_RESULT_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Each app adds its periodic tasks here (see the apps' tasks.py).
CELERY_BEAT_SCHEDULE: dict[str, dict] = {
    "worker-heartbeat": {"task": "identity_portal.tasks.worker_heartbeat", "schedule": 30.0},
}

# private_key_jwt machines may publish their keys at a jwks_uri, fetched over HTTPS only;
# private, loopback and link-local addresses are refused unless this is true (a test or
# an internal network), so a URL cannot point the portal at the inside of its network.
JWKS_URI_ALLOW_PRIVATE = env_bool("JWKS_URI_ALLOW_PRIVATE", False)

# --- Audit trail ------------------------------------------------------------
# Seconds between sealer runs: an event is sealed within about this long.
AUDIT_SEAL_INTERVAL = env_int("AUDIT_SEAL_INTERVAL", 10)
# Seconds between signed checkpoints (written even when nothing happened).
AUDIT_CHECKPOINT_INTERVAL = env_int("AUDIT_CHECKPOINT_INTERVAL", 300)
# Sealed events older than this are pruned (0 keeps everything).
AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 400)
AUDIT_SEAL_BATCH_SIZE = env_int("AUDIT_SEAL_BATCH_SIZE", 1000)
# Where every checkpoint is copied outside the database (audit/witness.py), comma-separated:
# file:PATH (append-only JSON Lines), log (the audit.witness logger), https://URL (POST).
# Embedded tier: a file under VAR_DIR; production: the log, until a real witness is named.
AUDIT_WITNESS = env_list(
    "AUDIT_WITNESS", "log" if PRODUCTION else f"file:{VAR_DIR / 'audit-witness.jsonl'}"
)
AUDIT_WITNESS_TIMEOUT = env_int("AUDIT_WITNESS_TIMEOUT", 5)
AUDIT_EXPORT_CHUNK_SIZE = env_int("AUDIT_EXPORT_CHUNK_SIZE", 2000)
# Who may call the audit API: machines with a bearer access token of ours (first, so an
# unauthenticated caller gets its WWW-Authenticate challenge), console sessions.
# The audit API is a resource server (RFC 9068 section 4): a machine's access token must
# name it in ``aud`` (ask with resource=<this URI>) as well as carry audit:read.
AUDIT_API_AUDIENCE = ENV.get("AUDIT_API_AUDIENCE", f"{ISSUER}/api/v1/audit")
AUDIT_API_AUTHENTICATION_CLASSES = [
    "tokens.api.authentication.BearerTokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]
# --- Management API ------------------------------------------------------------
# The `aud` a machine's token must carry (with a management scope) to call /api/v1/.
MANAGEMENT_API_AUDIENCE = ENV.get("MANAGEMENT_API_AUDIENCE", f"{ISSUER}/api/v1")
MANAGEMENT_API_AUTHENTICATION_CLASSES = [
    "tokens.api.authentication.BearerTokenAuthentication",
    "rest_framework.authentication.SessionAuthentication",
]
# Requests per caller (a machine or a console user): "N/second|minute|hour|day".
MANAGEMENT_API_RATE = ENV.get("MANAGEMENT_API_RATE", "600/minute")
if not re.fullmatch(r"[1-9][0-9]{0,6}/(second|minute|hour|day)", MANAGEMENT_API_RATE):
    raise ImproperlyConfigured("MANAGEMENT_API_RATE must look like 600/minute")
# How long a POST's Idempotency-Key answers a retry with the first result.
MANAGEMENT_API_IDEMPOTENCY_TTL = timedelta(hours=env_int("MANAGEMENT_API_IDEMPOTENCY_HOURS", 24))

CELERY_BEAT_SCHEDULE.update(
    {
        "audit-seal": {"task": "audit.seal_pending", "schedule": float(AUDIT_SEAL_INTERVAL)},
        "audit-checkpoint": {
            "task": "audit.checkpoint",
            "schedule": float(AUDIT_CHECKPOINT_INTERVAL),
        },
        "audit-prune": {"task": "audit.prune", "schedule": 3600.0},
        "clients-used-assertions-purge": {
            "task": "clients.used_assertions_purge",
            "schedule": 600.0,
        },
    }
)

# --- Metrics (identity_portal.metrics) ---------------------------------------
# /metrics in the Prometheus text format. Off, nothing is counted and /metrics is 404.
METRICS_ENABLED = env_bool("METRICS_ENABLED", True)
# Who may scrape without a token: client addresses (core.client_address, so
# X-Forwarded-For counts only from TRUSTED_PROXIES) in these networks.
METRICS_ALLOWED_CIDRS = env_list("METRICS_ALLOWED_CIDRS", "127.0.0.0/8,::1/128")
try:
    METRICS_ALLOWED_NETWORKS = tuple(
        ipaddress.ip_network(cidr, strict=False) for cidr in METRICS_ALLOWED_CIDRS
    )
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_CIDRS: {exc}") from exc
# Anyone else needs a bearer access token of ours with scope metrics:read issued for this
# audience (ask with resource=<this URI>), as the audit API wants its own.
METRICS_AUDIENCE = ENV.get("METRICS_AUDIENCE", f"{ISSUER}/metrics")
# A usable client secret that expires within this many days is "expiring".
SECRET_WARNING_DAYS = env_int("SECRET_WARNING_DAYS", 14)

# --- Auth, sessions, console ----------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "admin:login"
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600)
# Every console user signs in with a second factor (TOTP, or a one-time recovery code);
# off only for a throwaway local setup (identity_portal.console_session).
CONSOLE_REQUIRE_MFA = env_bool("CONSOLE_REQUIRE_MFA", True)
# A console session idle this many seconds is signed out (0: only SESSION_COOKIE_AGE applies).
CONSOLE_IDLE_TIMEOUT = env_int("CONSOLE_IDLE_TIMEOUT", 30 * 60)
# The name authenticator apps show next to the account.
OTP_TOTP_ISSUER = ENV.get("OTP_TOTP_ISSUER", "Machine Identity Portal")
# Passkeys (WebAuthn, django-otp-webauthn) as the other second factor: scoped to the
# relying party ID (the ISSUER's host name) and accepted only from the console's origins.
# Browsers refuse an IP address as RP ID and WebAuthn off https (except on localhost): with
# such an ISSUER (the embedded default http://127.0.0.1:8000) passkeys are simply not offered.
WEBAUTHN_RP_ID = ENV.get("WEBAUTHN_RP_ID", _issuer_host)
WEBAUTHN_ORIGINS = env_list("WEBAUTHN_ORIGINS", "{0.scheme}://{0.netloc}".format(urlsplit(ISSUER)))
OTP_WEBAUTHN_RP_ID = WEBAUTHN_RP_ID
OTP_WEBAUTHN_RP_NAME = OTP_TOTP_ISSUER
OTP_WEBAUTHN_ALLOWED_ORIGINS = WEBAUTHN_ORIGINS
# Our rows, bound to SECRET_KEY (identity_portal.models), in place of the package's.
OTP_WEBAUTHN_CREDENTIAL_MODEL = "identity_portal.PasskeyCredential"
OTP_WEBAUTHN_ATTESTATION_MODEL = "identity_portal.PasskeyAttestation"
# A second factor only: the password always comes first (no passwordless sign-in).
OTP_WEBAUTHN_ALLOW_PASSWORDLESS_LOGIN = False
# The package's checks refuse a start with a plain-http origin other than localhost; ours
# (identity_portal.checks) warns instead and the console offers no passkeys on such a host.
SILENCED_SYSTEM_CHECKS = ["otp_webauthn.E030", "otp_webauthn.E031"]
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
# Every page writes times as the audit log does: 2026-12-01 07:12:07 UTC.
FORMAT_MODULE_PATH = ["identity_portal.formats"]

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"

# --- Security headers ------------------------------------------------------
# TLS terminates at a proxy in production; it tells us the scheme.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if PRODUCTION else None
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", PRODUCTION)
# Probes from the load balancer speak plain HTTP on the private network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", PRODUCTION)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", PRODUCTION)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000 if PRODUCTION else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", PRODUCTION)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", PRODUCTION)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Every response: scripts, styles, images and fonts from our own origin only, no inline
# script or style (there is none), no plugins, no framing, forms post only to us.
CONTENT_SECURITY_POLICY = ENV.get(
    "CONTENT_SECURITY_POLICY",
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "font-src 'self'; connect-src 'self'; manifest-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
)
# Browser features the console never uses are off; the clipboard (copy buttons) and
# passkeys stay available to our own pages.
PERMISSIONS_POLICY = ENV.get(
    "PERMISSIONS_POLICY",
    "accelerometer=(), autoplay=(), camera=(), display-capture=(), encrypted-media=(), "
    "fullscreen=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), midi=(), "
    "payment=(), picture-in-picture=(), screen-wake-lock=(), usb=(), "
    "xr-spatial-tracking=(), clipboard-read=(), clipboard-write=(self), "
    "publickey-credentials-get=(self), publickey-credentials-create=(self)",
)
# Addresses of reverse proxies whose X-Forwarded-For is believed.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES")

# --- OAuth 2.0 (django-oauth-toolkit) --------------------------------------
OAUTH2_PROVIDER_APPLICATION_MODEL = "clients.Machine"
OAUTH2_PROVIDER = {
    "SCOPES": {"openid": "The machine's own identity"},
    "ALLOWED_GRANT_TYPES": ["client_credentials"],
    "ACCESS_TOKEN_EXPIRE_SECONDS": 600,
    "OIDC_ISS_ENDPOINT": ISSUER,
    "PKCE_REQUIRED": True,
    "REFRESH_TOKEN_REUSE_PROTECTION": True,
    "ALLOWED_REDIRECT_URI_SCHEMES": ["https"],
    # RFC 9700: every compliance gate on; no replayable token at rest.
    "COMPLIANT_BCP_RFC9700_IMPLICIT_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PASSWORD_GRANT": True,
    "COMPLIANT_BCP_RFC9700_PKCE_METHOD": True,
    "COMPLIANT_BCP_RFC9700_ACCESS_TOKEN_TRANSPORT": True,
    "COMPLIANT_BCP_RFC9700_AUTHZ_RESPONSE_ISS": True,
    "COMPLIANT_BCP_RFC9700_TOKEN_STORAGE": True,
    "COMPLIANT_BCP_RFC9700_REFRESH_TOKEN": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_SCHEME": True,
    "COMPLIANT_BCP_RFC9700_REDIRECT_URI_MATCHING": True,
    "COMPLIANT_BCP_RFC9700_PKCE_REQUIRED": True,
}

# Upper bound of any machine's access-token lifetime (each machine sets its own, default 600 s).
ACCESS_TOKEN_MAX_TTL = env_int("ACCESS_TOKEN_MAX_TTL", 3600)

# --- Tokens and signing keys (tokens app) -----------------------------------
# The algorithm of the key that signs new tokens: ES256, EdDSA or RS256.
TOKEN_SIGNING_ALGORITHM = ENV.get("TOKEN_SIGNING_ALGORITHM", "ES256")
# A rotated key is published (pending) this long before it signs, so every
# verifier's cached JWKS already holds it; JWKS_MAX_AGE must be shorter.
KEY_PUBLISH_DELAY = env_int("KEY_PUBLISH_DELAY", 3600)
JWKS_MAX_AGE = env_int("JWKS_MAX_AGE", 300)
# How often each process asks the cache whether the keys changed (seconds).
# A revoked key can sign for at most this long on other processes; its tokens
# fail introspection at once and it leaves JWKS at once.
KEYRING_CHECK_INTERVAL = float(ENV.get("KEYRING_CHECK_INTERVAL") or 1.0)
if JWKS_MAX_AGE >= KEY_PUBLISH_DELAY:
    raise ImproperlyConfigured("JWKS_MAX_AGE must be shorter than KEY_PUBLISH_DELAY")
# Signing keys rotate on this schedule (seconds, 0: only by hand): a pending key is
# created when the active one is this old, and signs after KEY_PUBLISH_DELAY.
KEY_ROTATION_INTERVAL = env_int("KEY_ROTATION_INTERVAL", 30 * 24 * 3600)
# Seconds between runs of the key schedule (rotate when due, activate, retire).
KEY_SCHEDULE_INTERVAL = env_int("KEY_SCHEDULE_INTERVAL", 60)
# Seconds between purges of expired token records.
TOKEN_PURGE_INTERVAL = env_int("TOKEN_PURGE_INTERVAL", 3600)
CELERY_BEAT_SCHEDULE["tokens-signing-keys-advance"] = {
    "task": "tokens.tasks.signing_keys_advance",
    "schedule": float(KEY_SCHEDULE_INTERVAL),
}
CELERY_BEAT_SCHEDULE["tokens-purge-expired"] = {
    "task": "tokens.tasks.issued_tokens_purge",
    "schedule": float(TOKEN_PURGE_INTERVAL),
}

# --- Credential lifecycle (clients app) --------------------------------------------
# Default maximum age of a client secret, seconds (0: none); a machine may set its own.
SECRET_MAX_AGE = env_int("SECRET_MAX_AGE", 0)
# Default warning period before a secret's maximum age, seconds; a machine may set its own.
SECRET_WARNING_PERIOD = env_int("SECRET_WARNING_PERIOD", 14 * 24 * 3600)
# A machine not used for this many days is stale: reported, and disabled when its policy
# (or the default STALE_MACHINE_ACTION) says "disable". 0 turns the check off.
STALE_MACHINE_DAYS = env_int("STALE_MACHINE_DAYS", 30)
STALE_MACHINE_ACTION = ENV.get("STALE_MACHINE_ACTION", "report")
if STALE_MACHINE_ACTION not in ("report", "disable"):
    raise ImproperlyConfigured("STALE_MACHINE_ACTION must be report or disable")
# Seconds between runs of the secret expiry and stale machine checks.
LIFECYCLE_CHECK_INTERVAL = env_int("LIFECYCLE_CHECK_INTERVAL", 300)
# Rows each lifecycle job handles per transaction (keyset batches).
LIFECYCLE_BATCH_SIZE = env_int("LIFECYCLE_BATCH_SIZE", 500)
CELERY_BEAT_SCHEDULE["clients-secrets-expire"] = {
    "task": "clients.secrets_expire",
    "schedule": float(LIFECYCLE_CHECK_INTERVAL),
}
CELERY_BEAT_SCHEDULE["clients-machines-stale"] = {
    "task": "clients.machines_stale",
    "schedule": float(LIFECYCLE_CHECK_INTERVAL),
}

# --- Notifications -----------------------------------------------------------------
# Email goes through Django's mail backend: SMTP when EMAIL_HOST is set, else the
# console backend (the mail is written to the worker's log), as in the embedded tier.
EMAIL_HOST = ENV.get("EMAIL_HOST", "")
EMAIL_PORT = env_int("EMAIL_PORT", 587)
EMAIL_HOST_USER = ENV.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = ENV.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", True)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
EMAIL_BACKEND = ENV.get(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend",
)
NOTIFICATION_FROM_EMAIL = ENV.get("NOTIFICATION_FROM_EMAIL", "portal@localhost")
# Also told about portal-wide events (signing key rotations); empty: nobody by email.
NOTIFICATION_SECURITY_EMAIL = ENV.get("NOTIFICATION_SECURITY_EMAIL", "")
# Webhooks to private, loopback or link-local addresses are refused unless this is true.
NOTIFICATION_WEBHOOK_ALLOW_PRIVATE = env_bool("NOTIFICATION_WEBHOOK_ALLOW_PRIVATE", False)
NOTIFICATION_WEBHOOK_TIMEOUT = env_int("NOTIFICATION_WEBHOOK_TIMEOUT", 5)
# A failed delivery is tried again after RETRY_BASE, doubling up to RETRY_MAX seconds,
# until RETRY_FOR seconds after it was recorded.
NOTIFICATION_RETRY_BASE = env_int("NOTIFICATION_RETRY_BASE", 30)
NOTIFICATION_RETRY_MAX = env_int("NOTIFICATION_RETRY_MAX", 3600)
NOTIFICATION_RETRY_FOR = env_int("NOTIFICATION_RETRY_FOR", 24 * 3600)
NOTIFICATION_DISPATCH_INTERVAL = env_int("NOTIFICATION_DISPATCH_INTERVAL", 15)
NOTIFICATION_BATCH_SIZE = env_int("NOTIFICATION_BATCH_SIZE", 100)
CELERY_BEAT_SCHEDULE["notifications-dispatch"] = {
    "task": "notifications.dispatch",
    "schedule": float(NOTIFICATION_DISPATCH_INTERVAL),
}

# --- Workload identity federation (clients.federation) ------------------------
# Federation trusts name issuers whose keys are fetched over https:// through their
# discovery document. Their addresses must be public unless this is on (an issuer on
# the private network; with it, a loopback issuer may also be plain http://).
FEDERATION_ALLOW_PRIVATE_ISSUERS = env_bool("FEDERATION_ALLOW_PRIVATE_ISSUERS", False)

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["rest_framework.authentication.SessionAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "UNAUTHENTICATED_USER": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Machine Identity Portal management API",
    "DESCRIPTION": (
        "Register and manage machines, their credentials, scopes, audiences and signing "
        "keys, and read the audit trail. Machines call it with a bearer access token "
        "carrying a management scope issued for MANAGEMENT_API_AUDIENCE; console users "
        "with their session and CSRF token."
    ),
    "VERSION": "1",
    "OAS_VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema describes the API, it grants nothing: anyone may read it.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"EventTypeEnum": "audit.choices.EventType"},
}

# --- Logging ---------------------------------------------------------------
LOG_FORMAT = ENV.get("LOG_FORMAT", "text")
LOG_LEVEL = ENV.get("LOG_LEVEL", "INFO").upper()
# One line per request (method, path without query, status, time, request id).
ACCESS_LOG = env_bool("ACCESS_LOG", True)
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"request_id": {"()": "identity_portal.log.RequestIdFilter"}},
    "formatters": {
        "text": {
            "()": "identity_portal.log.TextFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s",
        },
        "json": {"()": "identity_portal.log.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
            "filters": ["request_id"],
        }
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    # The log witness of audit checkpoints is a record, not chatter: kept at any LOG_LEVEL.
    "loggers": {"audit.witness": {"level": "INFO"}},
}
