"""Test override: fixed throwaway secrets, fast password hashing, an isolated var/.

Everything else comes from the same environment as production, so pointing
``DATABASE_URL`` / ``REDIS_URL`` at real services runs the suite against them.
"""

import os
import tempfile

os.environ.setdefault("VAR_DIR", tempfile.mkdtemp(prefix="mip-test-var-"))
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-" + "x" * 40)
# Two peppers and two key-encryption keys so rotation paths are exercised.
os.environ.setdefault(
    "SECRET_PEPPERS",
    "p2:MjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjI,p1:MTExMTExMTExMTExMTExMTExMTExMTExMTExMTExMTE",
)
os.environ.setdefault(
    "KEY_ENCRYPTION_KEYS",
    "k2:NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ0NDQ,k1:MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM",
)
os.environ.setdefault("AUDIT_SIGNING_KEY", "NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU1NTU")
# No shared witness file: tests that need a witness configure their own (tmp_path).
os.environ.setdefault("AUDIT_WITNESS", "log")

from identity_portal.settings import *  # noqa: F403
from identity_portal.settings import CACHE_URL

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if not CACHE_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
