"""The WSGI application as the web server loads it: requests carry no process environment.

granian (``identity_portal.web_server``) copies the whole process
environment into every request's WSGI environ, so ``request.META`` would
hold ``SECRET_KEY``, the peppers, ``DATABASE_URL`` with its password and
whatever else the host sets, one error report away from a log or an email.
Django's settings have read the environment by the time this module is
loaded; every variable inherited from it is dropped from each request.

A variable named like a request key (``HTTP_*``, a CGI name) is refused at
start: it would stand in for a header the client did not send (the
"httpoxy" confusion), and dropping it per request could drop the client's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from django.core.exceptions import ImproperlyConfigured

from identity_portal.wsgi import application as portal_application

# What a request's environ holds besides HTTP_* headers (PEP 3333 and CGI 1.1).
REQUEST_KEYS = frozenset(
    {
        "REQUEST_METHOD",
        "SCRIPT_NAME",
        "PATH_INFO",
        "QUERY_STRING",
        "CONTENT_TYPE",
        "CONTENT_LENGTH",
        "SERVER_NAME",
        "SERVER_PORT",
        "SERVER_PROTOCOL",
        "REMOTE_ADDR",
        "REMOTE_HOST",
        "REMOTE_PORT",
        "REMOTE_USER",
        "AUTH_TYPE",
        "GATEWAY_INTERFACE",
        "SERVER_SOFTWARE",
        "RAW_URI",
        "REQUEST_URI",
        "HTTPS",
    }
)


def request_shaped(name: str) -> bool:
    return name.startswith(("HTTP_", "wsgi.")) or name in REQUEST_KEYS


def without_inherited_environment(application: Callable, inherited: Iterable[str]) -> Callable:
    """``application``, seeing none of the ``inherited`` variables in its environ."""
    names = tuple(inherited)
    clashing = sorted(name for name in names if request_shaped(name))
    if clashing:
        raise ImproperlyConfigured(
            "environment variables named like request keys would reach requests as if the "
            f"client had sent them; unset {', '.join(clashing)} for the web server"
        )

    def scrubbed(environ, start_response):
        pop = environ.pop
        for name in names:
            pop(name, None)
        return application(environ, start_response)

    return scrubbed


application = without_inherited_environment(portal_application, os.environ.keys())
