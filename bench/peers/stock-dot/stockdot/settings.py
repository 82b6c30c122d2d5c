"""Stock django-oauth-toolkit, out of the box: the baseline a Django team starts from.

Only what the client credentials grant needs is configured; every security and
performance setting keeps the library's default (hashed client secrets with
Django's PBKDF2 hasher, opaque tokens stored in the database, a new database
connection per request). The database
comes from STOCK_DOT_DATABASE_URL (PostgreSQL, its own database) or is a SQLite
file under STOCK_DOT_DIR.
"""

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(os.environ.get("STOCK_DOT_DIR", "/tmp/stock-dot"))  # noqa: S108 (bench sets it)
SECRET_KEY = "stock-dot-peer-only"  # noqa: S105 (a throwaway benchmark peer)
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "oauth2_provider",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "stockdot.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.request",
            ]
        },
    }
]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": BASE_DIR / "db.sqlite3"}}
_url = os.environ.get("STOCK_DOT_DATABASE_URL", "")
if _url.startswith(("postgres://", "postgresql://")):
    _parts = urlsplit(_url)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(_parts.path.lstrip("/")),
            "HOST": _parts.hostname or "127.0.0.1",
            "PORT": str(_parts.port or 5432),
            "USER": unquote(_parts.username or "postgres"),
            "PASSWORD": unquote(_parts.password or ""),
        }
    }
USE_TZ = True
OAUTH2_PROVIDER = {"SCOPES": {"read": "read"}}
