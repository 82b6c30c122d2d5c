"""Lifecycle tasks run by beat: thin, idempotent, each calls its services as one job."""

from celery import shared_task

from jobs.services import PERIODIC_TASK_OPTIONS, job_execute
from tokens import services

KEYS_ADVANCE = "tokens.tasks.signing_keys_advance"
TOKENS_PURGE = "tokens.tasks.issued_tokens_purge"


def _keys() -> dict:
    rotated = services.signing_key_rotate_due()
    services.signing_keys_advance()
    return {"created": rotated.kid if rotated else None}


@shared_task(name=KEYS_ADVANCE, **PERIODIC_TASK_OPTIONS)
def signing_keys_advance() -> dict | None:
    """Start a scheduled rotation when due; activate pending keys whose publish delay is
    over; retire keys nobody needs. Row locks serialise it: not exclusive."""
    return job_execute(name=KEYS_ADVANCE, call=_keys, exclusive=False)


@shared_task(name=TOKENS_PURGE, **PERIODIC_TASK_OPTIONS)
def issued_tokens_purge() -> int | None:
    """Delete the records of expired tokens (their audit events stay)."""
    return job_execute(name=TOKENS_PURGE, call=services.issued_tokens_purge)
