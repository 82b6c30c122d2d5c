"""CEL conditions over an external token's claims (``claims.repository == "acme/billing"``).

CEL (the Common Expression Language, as Kubernetes, Envoy and Google Cloud's
workload identity federation use it) is not Turing complete and has no side
effects; ``common-expression-language`` evaluates it in Rust in tens of
microseconds. An expression is never evaluated by Python's ``eval``.

What an expression may do is fixed when the trust is saved
(``condition_check``): it must compile, refer to no variable but ``claims``
(and the names its own macros bind), call only the functions of
``ALLOWED_FUNCTIONS``, be at most ``MAX_CONDITION_LENGTH`` characters and use
at most ``MAX_COMPREHENSIONS`` comprehension macros (``all``, ``exists``,
``exists_one``, ``map``, ``filter``). With the bounds on the claims it is
evaluated over (``claims_within_bounds``: lists of at most ``MAX_CLAIM_ITEMS``,
nesting at most ``MAX_CLAIM_DEPTH``, the whole token at most 8 KB), that is
the cost limit: at most length x items^comprehensions steps, a few
milliseconds at worst. A condition holds only if it evaluates to ``true``;
an error (a missing claim, a type mismatch) is ``false``.
"""

from __future__ import annotations

import logging
import re
import sys
import types
from collections.abc import Mapping
from typing import Any

logger = logging.getLogger(__name__)


def _cel_without_its_command_line() -> types.ModuleType:
    """The ``cel`` package, without the command-line interface its ``__init__`` imports.

    ``cel/__init__.py`` runs ``from . import cli, stdlib``, and ``cel.cli``
    imports typer, rich, prompt_toolkit and pygments: about 230 modules, a
    fifth of a second and 8 MiB in every process that loads this module (each
    web worker, the Celery worker, every management command), for a command
    line the portal never runs. An empty module stands in for ``cel.cli``
    while the package imports, and is taken out of ``sys.modules`` again, so
    that an explicit ``import cel.cli`` still loads the real one. ``compile``
    and the programs it returns come from the Rust extension (``cel.cel``)
    either way; the federation tests exercise them through this module.
    """
    if "cel" in sys.modules:
        return sys.modules["cel"]
    stand_in = types.ModuleType("cel.cli", "Not loaded: the portal never runs cel's command line.")
    sys.modules.setdefault("cel.cli", stand_in)
    try:
        import cel
    finally:
        if sys.modules.get("cel.cli") is stand_in:
            del sys.modules["cel.cli"]
    return cel


cel = _cel_without_its_command_line()

MAX_CONDITION_LENGTH = 1024
MAX_COMPREHENSIONS = 2
MAX_CLAIM_ITEMS = 64
MAX_CLAIM_DEPTH = 6

# The operators (as CEL names their overloads) and functions an expression may use.
ALLOWED_FUNCTIONS = frozenset(
    {
        "!_",
        "-_",
        "_!=_",
        "_%_",
        "_&&_",
        "_*_",
        "_+_",
        "_-_",
        "_/_",
        "_<=_",
        "_<_",
        "_==_",
        "_>=_",
        "_>_",
        "_?_:_",
        "_||_",
        "_[_]",
        "@in",
        "@not_strictly_false",
        "contains",
        "endsWith",
        "startsWith",
        "matches",
        "size",
        "int",
        "uint",
        "double",
        "string",
    }
)

_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', re.DOTALL)
_COMPREHENSION = re.compile(r"\.\s*(?:all|exists_one|exists|map|filter)\s*\(\s*([A-Za-z_]\w*)")
# What the binding raises for an expression that fails at run time (a missing
# key, a type mismatch, a division by zero, a value CEL cannot hold).
_EVALUATION_ERRORS = (
    RuntimeError,
    KeyError,
    TypeError,
    ValueError,
    IndexError,
    OverflowError,
    ZeroDivisionError,
    AttributeError,
)


class ConditionError(ValueError):
    """A condition refused when saved; the message says why, for the admin."""


def condition_check(source: str) -> str:
    """The condition, stripped, if it is one we evaluate; ``ConditionError`` otherwise."""
    source = (source or "").strip()
    if not source:
        return ""
    if len(source) > MAX_CONDITION_LENGTH:
        raise ConditionError(f"A condition is at most {MAX_CONDITION_LENGTH} characters.")
    if "\x00" in source:
        raise ConditionError("A condition holds no NUL character.")
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else "syntax error"
        raise ConditionError(f"Not a valid CEL expression: {first_line}") from exc
    without_strings = _STRING_LITERAL.sub('""', source)
    bound = _COMPREHENSION.findall(without_strings)
    if len(bound) > MAX_COMPREHENSIONS:
        raise ConditionError(
            f"At most {MAX_COMPREHENSIONS} comprehension macros (all, exists, map, filter)."
        )
    unknown_variables = set(program.variables()) - {"claims", *bound}
    if unknown_variables:
        raise ConditionError(
            "A condition refers only to claims (claims.sub, claims.repository, ...); "
            f"unknown: {', '.join(sorted(unknown_variables))}."
        )
    unknown_functions = set(program.functions()) - ALLOWED_FUNCTIONS
    if unknown_functions:
        raise ConditionError(f"Functions not allowed: {', '.join(sorted(unknown_functions))}.")
    return source


def claims_within_bounds(value: Any, depth: int = 0) -> bool:
    """Whether the claims are small enough for the cost limit to hold.

    Nothing deeper than ``MAX_CLAIM_DEPTH`` (a value of any kind there is too
    deep), no object or list of more than ``MAX_CLAIM_ITEMS``. Descends only
    into containers: a token's scalar claims cost a check each, not a call.
    """
    if depth > MAX_CLAIM_DEPTH:
        return False
    if isinstance(value, Mapping):
        items = value.values()
    elif isinstance(value, list):
        items = value
    else:
        return True
    if len(value) > MAX_CLAIM_ITEMS:
        return False
    if value and depth == MAX_CLAIM_DEPTH:  # its items would lie past the limit
        return False
    for item in items:
        if isinstance(item, Mapping | list) and not claims_within_bounds(item, depth + 1):
            return False
    return True


# Per process: compiled programs by source (a trust's condition changes only with the trust).
_programs: dict[str, Any] = {}
_PROGRAMS_MAX = 1024


def condition_holds(source: str, claims: Mapping[str, Any]) -> bool:
    """Whether ``claims`` satisfy the (already checked) condition: ``true`` and nothing else."""
    program = _programs.get(source)
    if program is None:
        try:
            program = cel.compile(condition_check(source))
        except (ConditionError, ValueError, RuntimeError):
            return False
        if len(_programs) >= _PROGRAMS_MAX:
            _programs.clear()
        _programs[source] = program
    if not claims_within_bounds(claims):
        return False
    try:
        return program.execute({"claims": dict(claims)}) is True
    except _EVALUATION_ERRORS as exc:
        logger.debug("federation condition did not evaluate: %s", type(exc).__name__)
        return False
