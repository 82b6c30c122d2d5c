"""gunicorn settings, from the same environment as Django's."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY") or os.cpu_count() or 2)
worker_class = "sync"
timeout = 30
# Workers signal liveness by touching a temporary file on every loop; in
# memory that costs nothing, on a disk-backed /tmp it is a metadata write.
# gunicorn creates the file with mkstemp and unlinks it at once (hence S108 off).
_SHM = "/dev/shm"  # noqa: S108
if os.path.isdir(_SHM):
    worker_tmp_dir = _SHM
graceful_timeout = 10
# Bounded request line and headers: oversized input is refused before Django.
limit_request_line = 8190
limit_request_field_size = 16384
# The access line is written by identity_portal.middleware (ACCESS_LOG).
accesslog = None
