"""Register a fleet of machines for `make bench`'s fleet point, fast (bulk inserts).

    DATABASE_URL=postgres://... .venv/bin/python -m bench.fleet --count 100000 \
        --name-prefix bench-RUN-fleet --scope read --audience https://api.example --out FILE

Registering 100,000 machines one by one through ``machine_register`` (a
transaction, six statements, two audit events and a cache invalidation each)
takes many minutes on a busy machine; the fleet point needs them in seconds.
This fixture writes what ``machine_register`` writes, in bulk: the machine,
its scopes and audience, one secret (digest under the current pepper, bound
to the client_id, as ``secret_generate`` makes it), and one
``machine.registered`` audit event per machine naming the secret, so the
trail still accounts for every machine (the sealer seals them before the
first point). No cache entry and no generation: a machine nobody asked for yet
is exactly what the fleet point wants.

Writes ``client_id<TAB>secret`` per line to ``--out`` (mode 0600); the
harness reads it and deletes it. A benchmark fixture, not a product path: it
trusts its arguments (the scope and audience must exist).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--name-prefix", required=True)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "identity_portal.settings")

    import django

    django.setup()
    from django.db import transaction
    from django.utils import timezone
    from oauth2_provider.generators import generate_client_id

    from audit.choices import EventType
    from audit.context import Actor, Target
    from audit.models import AuditEvent
    from audit.services import audit_event_fields
    from clients.credentials import secret_generate
    from clients.models import Audience, ClientSecret, Machine, Scope

    scope = Scope.objects.get(name=args.scope)
    audience = Audience.objects.get(uri=args.audience)
    actor = Actor.system("make bench fleet")
    started = time.monotonic()
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        done = 0
        while done < args.count:
            size = min(args.batch, args.count - done)
            now = timezone.now()
            machines = [
                Machine(
                    name=f"{args.name_prefix}-{done + i + 1}",
                    client_id=generate_client_id(),
                    client_type=Machine.CLIENT_CONFIDENTIAL,
                    authorization_grant_type=Machine.GRANT_CLIENT_CREDENTIALS,
                    client_secret="",
                    hash_client_secret=False,
                    default_audience=audience,
                )
                for i in range(size)
            ]
            generated = [secret_generate(client_id=m.client_id) for m in machines]
            with transaction.atomic():
                Machine.objects.bulk_create(machines)
                Machine.allowed_scopes.through.objects.bulk_create(
                    [Machine.allowed_scopes.through(machine=m, scope=scope) for m in machines]
                )
                Machine.allowed_audiences.through.objects.bulk_create(
                    [
                        Machine.allowed_audiences.through(machine=m, audience=audience)
                        for m in machines
                    ]
                )
                secrets = ClientSecret.objects.bulk_create(
                    [
                        ClientSecret(
                            machine=m,
                            digest=g.digest,
                            digest_version=g.digest_version,
                            pepper_id=g.pepper_id,
                            display_prefix=g.display_prefix,
                            last_four=g.last_four,
                            created_at=now,
                            created_by=actor.display,
                        )
                        for m, g in zip(machines, generated, strict=True)
                    ]
                )
                AuditEvent.objects.bulk_create(
                    [
                        AuditEvent(
                            **audit_event_fields(
                                event_type=EventType.MACHINE_REGISTERED,
                                actor=actor,
                                target=Target(kind="machine", id=m.client_id, display=m.name),
                                details={
                                    "name": m.name,
                                    "scopes": [scope.name],
                                    "audiences": [audience.uri],
                                    "default_audience": audience.uri,
                                    "secret_id": s.pk,
                                    "fleet_fixture": True,
                                },
                                occurred_at=now,
                            )
                        )
                        for m, s in zip(machines, secrets, strict=True)
                    ]
                )
            out.writelines(
                f"{m.client_id}\t{g.raw}\n" for m, g in zip(machines, generated, strict=True)
            )
            done += size
    sys.stdout.write(f'{{"registered": {done}, "seconds": {time.monotonic() - started:.1f}}}\n')
    return 0


if __name__ == "__main__":
    sys.exit(main())
