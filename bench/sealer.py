"""The audit sealer as a benchmark runs it beside the portal (`make bench ... --sealer`).

    DATABASE_URL=postgres://... .venv/bin/python -m bench.sealer [--interval S]

Seals every committed unsealed event, then sleeps until the next pass, every
``AUDIT_SEAL_INTERVAL`` seconds by default: what Celery beat's ``audit-seal``
schedule does in production, without the broker. One long-lived process with
one database connection, so its PostgreSQL backend lives through a whole
measurement and the harness counts its CPU with the web server's backends.

After each pass it prints one JSON line ``{"started": t0, "finished": t1,
"sealed": n}`` (wall-clock seconds): the harness waits for a pass that started
after the load ended, so every token of a measured point is sealed inside it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sealer")
    parser.add_argument("--interval", type=float, default=None, help="AUDIT_SEAL_INTERVAL")
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings")

    import django

    django.setup()
    from django.conf import settings

    from audit.services import audit_seal_pending

    interval = args.interval if args.interval is not None else settings.AUDIT_SEAL_INTERVAL
    stopping = False

    def stop(_signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        started = time.time()
        sealed = audit_seal_pending()
        finished = time.time()
        sys.stdout.write(
            json.dumps({"started": started, "finished": finished, "sealed": sealed}) + "\n"
        )
        sys.stdout.flush()
        deadline = time.monotonic() + interval
        while not stopping and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
