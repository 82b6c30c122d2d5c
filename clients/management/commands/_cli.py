"""What the clients commands share: the cli actor, JSON output, one way to fail."""

from __future__ import annotations

import getpass
import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError

from audit.context import Actor

# Exit status for refused input (unknown machine, scope or audience, bad values).
USAGE_ERROR = 2
# Exit status when the change is saved but the cache could not be told about it:
# other processes may act on the previous state for a while (clients.cache_outcome).
CACHE_NOT_TOLD = 3


def cli_actor(command: str) -> Actor:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        user = ""
    return Actor.cli(f"manage.py {command}" + (f" ({user})" if user else ""))


def refuse(message: str) -> CommandError:
    return CommandError(message, returncode=USAGE_ERROR)


def refuse_invalid(error: ValidationError) -> CommandError:
    if hasattr(error, "error_dict"):
        parts = [f"{field}: {' '.join(msgs)}" for field, msgs in error.message_dict.items()]
    else:
        parts = error.messages
    return refuse("; ".join(parts))


def cache_not_told(failures: list[str]) -> CommandError:
    """The change happened (its JSON is printed), but say on stderr what did not."""
    return CommandError(" ".join(failures), returncode=CACHE_NOT_TOLD)


def dump(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
