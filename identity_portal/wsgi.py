"""WSGI entry point. In production the system checks run before serving."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings")

_django_application = get_wsgi_application()

# Imported once the apps are loaded: the lane imports the token view.
from identity_portal.token_lane import with_token_lane  # noqa: E402

application = with_token_lane(_django_application)


def _refuse_weak_production() -> None:
    from django.conf import settings
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured

    if settings.PRODUCTION:
        errors = [m for m in checks.run_checks() if m.is_serious()]
        if errors:
            raise ImproperlyConfigured("; ".join(str(m.msg) for m in errors))


_refuse_weak_production()

from identity_portal.log import record_fields_trim  # noqa: E402

record_fields_trim()

# Everything loaded so far lives as long as the process: moved out of the
# collector's sight, it is not walked again by every full collection, which
# otherwise pauses a worker for milliseconds now and then (a p99 cost).
gc.freeze()
