import pytest


@pytest.fixture(autouse=True)
def _clean_cache(clean_cache):
    """Every clients test starts with an empty cache."""
