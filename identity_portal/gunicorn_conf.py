"""gunicorn settings, from the same environment as Django's."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 2)
worker_class = "sync"
timeout = 30
graceful_timeout = 10
# Bounded request line and headers: oversized input is refused before Django.
limit_request_line = 8190
limit_request_field_size = 16384
accesslog = "-"
# The path without its query string: credentials never belong in a URL, and
# if a client puts them there anyway they must not reach the log.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'
