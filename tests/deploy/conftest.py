"""The gate of tests marked ``nginx``: they need the nginx binary (Debian's ``nginx``).

Without it they skip with the reason; with ``REQUIRE_SERVICES=1`` (CI, which
installs it) its absence is a failure, like the other services'.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import _unavailable

# /usr/sbin is not on every user's PATH.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


@pytest.fixture(autouse=True)
def _nginx_gate(request):
    if request.node.get_closest_marker("nginx") and NGINX is None:
        _unavailable("needs nginx: apt-get install -y nginx")
