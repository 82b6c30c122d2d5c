"""Requests served by the web server carry none of the process environment."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from identity_portal.served import without_inherited_environment
from identity_portal.web_server import APPLICATION, web_server_argv


def _recording():
    seen = {}

    def inner(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    return inner, seen


def test_inherited_variables_never_reach_the_application():
    inner, seen = _recording()
    app = without_inherited_environment(inner, ["SECRET_KEY", "DATABASE_URL", "PATH"])
    environ = {
        # What granian hands over: the process environment merged with the request.
        "SECRET_KEY": "k" * 50,
        "DATABASE_URL": "postgres://portal:hunter2@db/portal",
        "PATH": "/usr/bin",
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/oauth/token",
        "HTTP_AUTHORIZATION": "Basic abc",
        "wsgi.url_scheme": "https",
    }

    app(environ, lambda status, headers: None)

    assert seen == {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/oauth/token",
        "HTTP_AUTHORIZATION": "Basic abc",
        "wsgi.url_scheme": "https",
    }


@pytest.mark.parametrize(
    "name", ["HTTP_PROXY", "HTTP_X_FORWARDED_FOR", "REMOTE_ADDR", "wsgi.input"]
)
def test_a_variable_named_like_a_request_key_is_refused_at_start(name):
    inner, _ = _recording()
    with pytest.raises(ImproperlyConfigured) as raised:
        without_inherited_environment(inner, ["HOME", name])
    assert f"unset {name} for the web server" in str(raised.value)


def test_the_web_server_loads_the_scrubbed_application():
    from identity_portal import served

    assert web_server_argv({})[-1] == APPLICATION == "identity_portal.served:application"
    assert served.application.__name__ == "scrubbed"
