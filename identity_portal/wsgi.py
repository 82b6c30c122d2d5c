"""WSGI entry point. In production the system checks run before serving."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings")

application = get_wsgi_application()


def _refuse_weak_production() -> None:
    from django.conf import settings
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured

    if settings.PRODUCTION:
        errors = [m for m in checks.run_checks() if m.is_serious()]
        if errors:
            raise ImproperlyConfigured("; ".join(str(m.msg) for m in errors))


_refuse_weak_production()
