import pytest


@pytest.fixture(autouse=True)
def _clean_cache(clean_cache):
    """Throttle counts (many tests here fail on purpose) and cached machines start empty."""
    yield
