from tests.identity_portal.test_settings import _manage


def test_a_jwks_cache_longer_than_the_publish_delay_refuses_to_start(tmp_path):
    result = _manage(["check"], {"KEY_PUBLISH_DELAY": "300", "JWKS_MAX_AGE": "600"}, tmp_path)

    assert result.returncode == 1
    assert "JWKS_MAX_AGE must be shorter than KEY_PUBLISH_DELAY" in result.stderr
