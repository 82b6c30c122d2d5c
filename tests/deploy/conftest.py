"""The gates of tests marked ``nginx`` and ``promtool``: they need Debian's ``nginx``
and ``promtool`` (package ``prometheus``).

Without them they skip with the reason; with ``REQUIRE_SERVICES=1`` (CI, which
installs both) their absence is a failure, like the other services'.
"""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import _unavailable

# /usr/sbin is not on every user's PATH.
NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
PROMTOOL = shutil.which("promtool")


@pytest.fixture(autouse=True)
def _nginx_gate(request):
    if request.node.get_closest_marker("nginx") and NGINX is None:
        _unavailable("needs nginx: apt-get install -y nginx")
    if request.node.get_closest_marker("promtool") and PROMTOOL is None:
        _unavailable("needs promtool: apt-get install -y prometheus")
