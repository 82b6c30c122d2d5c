"""The Machine Identity Portal project package: settings, URLs, Celery, health."""

from identity_portal.celery import app as celery_app

__all__ = ["celery_app"]
