"""Create the stock peer's database and its two machine clients, one per secret setting.

    STOCK_DOT_DIR=var/bench/stock-dot [STOCK_DOT_DATABASE_URL=postgres://...] python setup.py

"bench-hashed": the library default, secret hashed with Django's PBKDF2.
"bench-plain": hash_client_secret=False, the library's fastest (and least safe) setting.
Both live on one server, so one gunicorn serves both series of the benchmark.
Secrets are random per run. Prints a JSON list of {client_id, client_secret}.
"""

import json
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stockdot.settings")
os.makedirs(os.environ.get("STOCK_DOT_DIR", "/tmp/stock-dot"), exist_ok=True)  # noqa: S108 (bench sets it)

import django  # noqa: E402

django.setup()
from django.core.management import call_command  # noqa: E402
from oauth2_provider.models import Application  # noqa: E402

call_command("migrate", verbosity=0)
clients = []
for client_id, hashed in (("bench-hashed", True), ("bench-plain", False)):
    secret = secrets.token_urlsafe(32)
    Application.objects.filter(client_id=client_id).delete()
    Application.objects.create(
        name=client_id,
        client_id=client_id,
        client_secret=secret,
        hash_client_secret=hashed,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
    )
    clients.append({"client_id": client_id, "client_secret": secret})
sys.stdout.write(json.dumps(clients) + "\n")
