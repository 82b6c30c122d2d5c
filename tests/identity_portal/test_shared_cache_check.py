"""Production refuses to start with a cache per host, unless one host runs everything."""

from __future__ import annotations

import pytest

from tests.identity_portal.test_settings import STRONG, _manage

WITHOUT_CACHE = {key: value for key, value in STRONG.items() if key != "CACHE_URL"}
REFUSAL = (
    "?: (identity_portal.E008) Production needs a cache shared by every node; the cache is "
    "identity_portal.cache.FileBasedCache."
)
HINT = (
    "\tHINT: Set REDIS_URL or CACHE_URL to a redis:// URL. If one host runs every process "
    "(web and workers), set SINGLE_NODE=true instead."
)


def test_production_without_a_shared_cache_refuses_to_start(tmp_path):
    result = _manage(["check"], {"DJANGO_ENV": "production", **WITHOUT_CACHE}, tmp_path)

    assert result.returncode == 1
    assert REFUSAL in result.stderr
    assert HINT in result.stderr
    assert "identity_portal.E00" not in result.stderr.replace("identity_portal.E008", "")


@pytest.mark.parametrize("variable", ["REDIS_URL", "CACHE_URL"])
def test_production_with_redis_as_the_cache_starts(tmp_path, variable):
    result = _manage(
        ["check"],
        {"DJANGO_ENV": "production", **WITHOUT_CACHE, variable: "redis://cache.internal:6379/1"},
        tmp_path,
    )

    assert result.returncode == 0, result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout


@pytest.mark.parametrize(("value", "refused"), [("true", False), ("false", True), ("", True)])
def test_single_node_lets_production_keep_the_file_cache(tmp_path, value, refused):
    result = _manage(
        ["check"], {"DJANGO_ENV": "production", **WITHOUT_CACHE, "SINGLE_NODE": value}, tmp_path
    )

    assert (result.returncode, REFUSAL in result.stderr) == ((1, True) if refused else (0, False))


def test_development_keeps_the_file_cache_without_a_word(tmp_path):
    result = _manage(["check"], {}, tmp_path)

    assert result.returncode == 0, result.stderr
    assert "E008" not in result.stderr
