"""The authentication cache: a machine and its secret digests in one cache entry.

The token endpoint must not touch the database to decide who a machine is:
one cache GET returns the ``Machine`` (with its scopes and audiences
prefetched, so the token code needs no query either), the digests of its
recent secrets with their expiry, and its parsed IP allow-list.

Every service that changes a machine, its scopes, audiences or secrets calls
``machine_cache_invalidate`` inside its transaction; after commit it writes
a new **generation** for the machine: a random value under a key of its own,
read in the same MGET as the entry. An entry is tagged with the generation
its reader saw *before* it read the database, and is served only while that
generation is still the machine's. A reader that loaded the old rows just
before the commit may still store its entry afterwards, but tagged with the
generation the change replaced, so no request after the change serves it
(a plain delete would let that reader put the stale entry back). The next
request after a change reloads the machine once and caches it: there is no
period during which a changed or new machine is read from the database.
Generations are random, never counted, so a value cannot come back (no ABA
when a key expires); the generation key outlives every entry built before it
(``MACHINE_CACHE_GENERATION_TTL``), because an entry carries the time its
generation was read and is served for at most ``MACHINE_CACHE_TTL`` after it,
whatever the cache says of its expiry. That bound also holds against someone
who can write to Redis: an authentic entry replayed there with its generation
serves the machine as it was for at most ``MACHINE_CACHE_TTL`` after it was
read. When the generation cannot be written, the caller hears it
(``clients.cache_outcome``).

The entry is stored as JSON bytes, never a pickle: anyone who can write to
the cache must not be able to run code in a web worker. The cache backend
(``identity_portal.cache``) authenticates every value under a key derived
from ``SECRET_KEY`` and bound to its cache key, so a forged or moved entry is
a miss; the decoder also checks that the entry is the requested machine's.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.db.models.base import ModelState
from django.db.models.query import QuerySet
from redis.exceptions import RedisError

from clients.cache_outcome import cache_failure_report
from clients.constants import (
    CACHED_SECRETS_PER_MACHINE,
    MACHINE_CACHE_GENERATION_TTL,
    MACHINE_CACHE_MISS_TTL,
    MACHINE_CACHE_PREVIOUS_VERSIONS,
    MACHINE_CACHE_TOMBSTONE_TTL,
    MACHINE_CACHE_TTL,
    MACHINE_CACHE_VERSION,
    MAX_CLIENT_KEYS,
)
from clients.credentials import (
    UnknownPepper,
    binding_verify,
    client_key_binding,
    jwks_uri_binding,
    secret_effective_expiry,
)
from clients.models import Audience, ClientKey, ClientSecret, Machine, Scope
from core import jose, metrics
from core.prepared import dollar_placeholders, prepared_cursor
from core.remote_jwks import keyset_from_jwks

logger = logging.getLogger(__name__)

# What a cache backend raises when its server is away (Redis) or its disk fails (file cache).
CACHE_ERRORS = (RedisError, OSError)

_MISSING = "missing"
_TOMBSTONE = "tombstone"

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class CachedSecret:
    """What verification needs of a secret; times are POSIX seconds."""

    id: int
    pepper_id: str
    digest_version: int
    digest: str
    expires_at: float | None
    revoked_at: float | None
    # Bootstrap limits: usable from ``not_before``; ``limited``: each use is counted
    # in the database (``clients.authentication``), the cache cannot count.
    not_before: float | None = None
    limited: bool = False


@dataclass(frozen=True)
class MachineAuthEntry:
    """What one cache GET returns. The related rows are kept apart from ``machine``
    so the stored form holds plain rows, not QuerySets; ``machine_with_relations``
    puts them back."""

    machine: Machine
    allowed_scopes: tuple[Scope, ...]
    default_scopes: tuple[Scope, ...]
    allowed_audiences: tuple[Audience, ...]
    secrets: tuple[CachedSecret, ...]
    networks: tuple[IPNetwork, ...]
    # private_key_jwt: the authentic registered keys (public JWKs, and one verifier per
    # key and algorithm, parsed once per decoded entry) and the authentic jwks_uri ("" if none).
    key_jwks: tuple[dict, ...] = ()
    keys: tuple[jose.Verifier, ...] = ()
    jwks_uri: str = ""
    # The machine's generation its reader saw before reading the rows ("" when the
    # machine had none), and when (POSIX seconds): set when the entry is stored.
    generation: str = ""
    generation_read_at: float = 0.0
    # Loaded on PostgreSQL: the rows as the database sent them (JSON arrays in the
    # stored form), which the encoder writes as they are instead of rebuilding them.
    rows: dict[str, list] | None = field(default=None, compare=False, repr=False)

    def machine_with_relations(self) -> Machine:
        """The machine, whose ``allowed_scopes.all()`` and friends need no query.

        Set once per entry: a decoded entry serves every request of the process
        until the machine changes, and building the three QuerySets is not free.
        """
        machine = self.machine
        if "allowed_audiences" not in getattr(machine, "_prefetched_objects_cache", {}):
            machine._prefetched_objects_cache = {
                "allowed_scopes": _evaluated(Scope, self.allowed_scopes),
                "default_scopes": _evaluated(Scope, self.default_scopes),
                "allowed_audiences": _evaluated(Audience, self.allowed_audiences),
            }
        return machine


def _evaluated(model, rows) -> QuerySet:
    queryset = QuerySet(model=model)
    queryset._result_cache = list(rows)
    queryset._prefetch_done = True
    return queryset


def cache_safely(call: Callable[..., Any], *args: Any, default: Any = None, **kwargs: Any) -> Any:
    """Run one cache call; if the cache is down, log and return ``default``.

    The token path keeps working without the cache (docs/design.md, decision 8):
    machines are read from the database and throttling is skipped until the
    cache is back, because refusing every machine is a worse outage.
    """
    try:
        return call(*args, **kwargs)
    except CACHE_ERRORS as exc:
        logger.warning("cache unavailable (%s): %s", call.__name__, type(exc).__name__)
        metrics.cache_error(operation=call.__name__)
        return default


def _client_digest(client_id: str) -> str:
    # Hashed: client_id comes from the network and may hold anything.
    return hashlib.sha256(client_id.encode("utf-8")).hexdigest()[:40]


def machine_cache_key(client_id: str, version: int = MACHINE_CACHE_VERSION) -> str:
    # Versioned: a deploy that changes the entry's shape must not read the previous one.
    return f"clients:machine:v{version}:{_client_digest(client_id)}"


def machine_generation_key(client_id: str) -> str:
    """The key of the machine's generation, read in the same MGET as its entry."""
    return f"{_GENERATION_PREFIX}{_client_digest(client_id)}"


_ENTRY_PREFIX = f"clients:machine:v{MACHINE_CACHE_VERSION}:"
_GENERATION_PREFIX = "clients:machine-generation:"


def _key_verifiers(jwks: tuple[dict, ...]) -> tuple[jose.Verifier, ...]:
    if not jwks:
        return ()
    return tuple(keyset_from_jwks({"keys": list(jwks)}).verifiers.values())


def _bound(expected, stored: str) -> bool:
    try:
        return binding_verify(expected(), stored)
    except (UnknownPepper, ValueError):
        return False


def client_key_is_authentic(key: ClientKey, *, client_id: str) -> bool:
    """Whether a key row is one the portal wrote for the machine ``client_id`` (its binding)."""
    return _bound(
        lambda: client_key_binding(
            client_id=client_id, public_jwk=key.public_jwk, pepper_id=key.pepper_id
        ),
        key.binding,
    )


def _authentic_keys(machine: Machine) -> tuple[dict, ...]:
    """The machine's registered public keys whose binding holds; the others are logged."""
    if "private_key_jwt" not in machine.auth_methods:
        return ()  # no query for the machines that do not use keys (the cold path's budget)
    authentic = []
    for row in ClientKey.objects.filter(machine=machine).order_by("created_at", "id"):
        if client_key_is_authentic(row, client_id=machine.client_id):
            authentic.append(dict(row.public_jwk))
        else:
            logger.error(
                "client key %r of machine %s fails its binding: ignored (planted or edited?)",
                str(row.kid)[:128],
                machine.client_id,
            )
    return tuple(authentic[:MAX_CLIENT_KEYS])


def _authentic_jwks_uri(machine: Machine) -> str:
    if not machine.jwks_uri:
        return ""
    if _bound(
        lambda: jwks_uri_binding(
            client_id=machine.client_id,
            jwks_uri=machine.jwks_uri,
            pepper_id=machine.jwks_uri_pepper_id,
        ),
        machine.jwks_uri_binding,
    ):
        return machine.jwks_uri
    logger.error("jwks_uri of machine %s fails its binding: ignored", machine.client_id)
    return ""


def _entry_querysets(client_id: str) -> dict[str, QuerySet]:
    """What an entry is made of, each a queryset of rows (read together by the loader)."""
    machine_rows = Machine.objects.filter(client_id=client_id, deleted_at__isnull=True)
    return {
        "machine": machine_rows,
        "default_audience": Audience.objects.filter(default_for__in=machine_rows),
        "allowed_scopes": Scope.objects.filter(machines__in=machine_rows),
        "default_scopes": Scope.objects.filter(default_for__in=machine_rows),
        "allowed_audiences": Audience.objects.filter(machines__in=machine_rows),
        "secrets": ClientSecret.objects.filter(machine__in=machine_rows).order_by(
            "-created_at", "-id"
        )[:CACHED_SECRETS_PER_MACHINE],
    }


def machine_auth_entry_load(client_id: str) -> MachineAuthEntry | None:
    """Read the entry from the database (the cold path): one statement on PostgreSQL.

    In a fleet most requests are cold (a machine asks about once per token
    lifetime), so the machine, its related rows and its secrets come back in
    one round trip (``_rows_in_one_round_trip``) rather than one query each.
    A machine that uses private_key_jwt costs one more, for its registered
    keys (``_authentic_keys``); the others never read them.
    """
    documents: dict[str, list] = {}
    found = _rows_in_one_round_trip(_entry_querysets, client_id, documents=documents)
    if not found["machine"]:
        return None
    machine = found["machine"][0]
    default_audience = next(
        (a for a in found["default_audience"] if a.pk == machine.default_audience_id), None
    )
    rows = None
    if documents:
        rows = {
            "machine": documents["machine"][0],
            "default_audience": next(
                (
                    row
                    for row, audience in zip(
                        documents["default_audience"], found["default_audience"], strict=True
                    )
                    if audience is default_audience
                ),
                None,
            ),
            **{
                name: documents[name]
                for name in ("allowed_scopes", "default_scopes", "allowed_audiences")
            },
        }
    Machine.default_audience.field.set_cached_value(machine, default_audience)
    secrets = []
    for row in found["secrets"]:
        expiry = secret_effective_expiry(
            created_at=row.created_at,
            expires_at=row.expires_at,
            max_secret_age=machine.max_secret_age,
        )
        secrets.append(
            CachedSecret(
                id=row.pk,
                pepper_id=row.pepper_id,
                digest_version=row.digest_version,
                digest=row.digest,
                expires_at=expiry.timestamp() if expiry else None,
                revoked_at=row.revoked_at.timestamp() if row.revoked_at else None,
                not_before=row.not_before.timestamp() if row.not_before else None,
                limited=row.max_uses is not None,
            )
        )
    networks = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in machine.ip_allowlist)
    key_jwks = _authentic_keys(machine)
    return MachineAuthEntry(
        machine=machine,
        allowed_scopes=tuple(found["allowed_scopes"]),
        default_scopes=tuple(found["default_scopes"]),
        allowed_audiences=tuple(found["allowed_audiences"]),
        secrets=tuple(secrets),
        networks=networks,
        key_jwks=key_jwks,
        keys=_key_verifiers(key_jwks),
        jwks_uri=_authentic_jwks_uri(machine),
        rows=rows,
    )


# A stand-in for the key while a statement is compiled (no client_id holds NUL).
_KEY_PLACEHOLDER = "\x00mip-statement-key\x00"
# Per process: the querysets builder -> (SQL, parameters with the placeholder,
# (name, model) of each queryset).
_statements: dict[Callable, tuple[str, list[Any], list[tuple[str, type]]]] = {}


def _statement(
    querysets_for: Callable[[str], dict[str, QuerySet]],
) -> tuple[str, list[Any], list[tuple[str, type]]]:
    """One ``SELECT`` of every queryset's rows as JSON arrays, compiled once per process.

    Each queryset (with its filters, ordering and slice) becomes a scalar
    subquery aggregating its rows into a JSON array of rows in concrete-field
    order, the form this module's entries store rows in. Compiled once with a
    placeholder key: building and compiling six querysets costs several
    times the query itself.
    """
    found = _statements.get(querysets_for)
    if found is None:
        selects, params, parts = [], [], []
        for name, queryset in querysets_for(_KEY_PLACEHOLDER).items():
            attnames = [attname for attname, _ in _layout(queryset.model)]
            sql, query_params = queryset.values_list(*attnames).query.sql_with_params()
            columns = ", ".join(f"c{index}" for index in range(len(attnames)))
            # Django compiled ``sql`` from our own querysets; values stay parameters.
            selects.append(
                f"(SELECT coalesce(json_agg(json_build_array({columns})), '[]'::json) "  # noqa: S608
                f"FROM ({sql}) AS q({columns}))"
            )
            params.extend(query_params)
            parts.append((name, queryset.model))
        if _KEY_PLACEHOLDER not in params:
            raise ValueError("the querysets do not depend on their key")
        # $n placeholders: psycopg would parse a statement this long on every execution.
        found = _statements[querysets_for] = (
            dollar_placeholders("SELECT " + ", ".join(selects)),
            params,
            parts,
        )
    return found


def _rows_in_one_round_trip(
    querysets_for: Callable[[str], dict[str, QuerySet]],
    key: str,
    *,
    documents: dict[str, list] | None = None,
) -> dict[str, list]:
    """The model instances of ``querysets_for(key)``, in one statement on PostgreSQL.

    Five ORM queries cost about five times the Python and the round trips of
    this one, and the statement is prepared once per connection
    (``core.prepared``). Other backends (SQLite, in process) run the querysets
    one by one. On PostgreSQL, ``documents`` (if given) receives each
    queryset's rows as the database sent them, in concrete-field order.
    """
    if connection.vendor != "postgresql":
        return {name: list(queryset) for name, queryset in querysets_for(key).items()}
    sql, params, parts = _statement(querysets_for)
    with prepared_cursor(raw=True) as cursor:
        cursor.execute(sql, [key if value == _KEY_PLACEHOLDER else value for value in params])
        fetched = cursor.fetchone()
    found = {}
    for (name, model), document in zip(parts, fetched, strict=True):
        rows = json.loads(document) if isinstance(document, str) else document
        found[name] = [_instance(model, row) for row in rows]
        if documents is not None:
            documents[name] = rows
    return found


def _plain(value: Any) -> Any:
    """A model field's value as JSON; ``Field.to_python`` turns it back."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


def _fields(model) -> tuple:
    return tuple(model._meta.concrete_fields)


def _row(instance) -> list:
    """The instance's concrete field values, in field order."""
    return [_plain(getattr(instance, f.attname)) for f in _fields(type(instance))]


# Per model: (attname, converter or None) per concrete field. Only dates and UUIDs are
# not JSON types; every other value is stored as the ORM loaded it.
_layouts: dict[type, tuple[tuple[str, Callable[[Any], Any] | None], ...]] = {}


def _converter(field) -> Callable[[Any], Any] | None:
    if isinstance(field, models.DateTimeField | models.DateField | models.UUIDField):
        return field.to_python
    return None


def _layout(model) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    layout = _layouts.get(model)
    if layout is None:
        layout = tuple((f.attname, _converter(f)) for f in _fields(model))
        _layouts[model] = layout
    return layout


def _instance(model, row: list):
    """A model instance as the ORM would have loaded it (no query, nothing to save).

    Built as unpickling builds one (``Model.__reduce__``: the class's ``__new__``
    and the field values set directly), which costs a fraction of ``__init__``.
    """
    layout = _layout(model)
    if type(row) is not list or len(row) != len(layout):
        raise ValueError(f"{model.__name__}: a row of another shape")
    values = {}
    for (attname, convert), value in zip(layout, row, strict=True):
        values[attname] = value if convert is None or value is None else convert(value)
    instance = model.__new__(model)
    instance.__dict__.update(values)
    state = instance._state = ModelState()
    state.adding = False
    state.db = "default"
    return instance


def machine_auth_entry_encode(entry: MachineAuthEntry) -> bytes:
    if entry.rows is not None:
        # As the database sent them (the cold path on PostgreSQL): the same arrays
        # ``_row`` would build, without a Python call per field.
        rows = entry.rows
    else:
        machine = entry.machine
        default_audience = machine.default_audience if machine.default_audience_id else None
        rows = {
            "machine": _row(machine),
            "default_audience": _row(default_audience) if default_audience else None,
            "allowed_scopes": [_row(scope) for scope in entry.allowed_scopes],
            "default_scopes": [_row(scope) for scope in entry.default_scopes],
            "allowed_audiences": [_row(audience) for audience in entry.allowed_audiences],
        }
    document = {
        **rows,
        "secrets": [
            [
                s.id,
                s.pepper_id,
                s.digest_version,
                s.digest,
                s.expires_at,
                s.revoked_at,
                s.not_before,
                s.limited,
            ]
            for s in entry.secrets
        ],
        "networks": [str(network) for network in entry.networks],
        "keys": list(entry.key_jwks),
        "jwks_uri": entry.jwks_uri,
        "generation": [entry.generation, entry.generation_read_at],
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def _decode(raw: bytes) -> MachineAuthEntry:
    document = json.loads(raw)
    machine = _instance(Machine, document["machine"])
    if document["default_audience"] is not None:
        audience = _instance(Audience, document["default_audience"])
        if audience.pk != machine.default_audience_id:
            raise ValueError("default audience is not the machine's")
        Machine.default_audience.field.set_cached_value(machine, audience)
    return MachineAuthEntry(
        machine=machine,
        allowed_scopes=tuple(_instance(Scope, row) for row in document["allowed_scopes"]),
        default_scopes=tuple(_instance(Scope, row) for row in document["default_scopes"]),
        allowed_audiences=tuple(_instance(Audience, row) for row in document["allowed_audiences"]),
        secrets=tuple(
            CachedSecret(
                id=int(id_),
                pepper_id=str(pepper_id),
                digest_version=int(version),
                digest=str(digest),
                expires_at=None if expires_at is None else float(expires_at),
                revoked_at=None if revoked_at is None else float(revoked_at),
                not_before=None if not_before is None else float(not_before),
                limited=limited is True,
            )
            for (
                id_,
                pepper_id,
                version,
                digest,
                expires_at,
                revoked_at,
                not_before,
                limited,
            ) in document["secrets"]
        ),
        networks=tuple(ipaddress.ip_network(cidr) for cidr in document["networks"]),
        key_jwks=tuple(dict(jwk) for jwk in document["keys"]),
        keys=_key_verifiers(tuple(document["keys"])),
        jwks_uri=str(document["jwks_uri"]),
        generation=str(document["generation"][0]),
        generation_read_at=float(document["generation"][1]),
    )


# Per process: an entry's bytes -> the entry. Building a Machine and its rows costs
# far more than the cache round trip's own parsing, and an entry changes only when
# the machine does, so equal bytes are decoded once. Entries are never mutated by
# their readers (``machine_with_relations`` only sets a cache of the same
# relations), so sharing one between requests is safe.
_decoded: dict[bytes, MachineAuthEntry] = {}
_DECODED_MAX = 4096
# Decode failures already logged by this process (one line, not one per request).
_undecodable: set[bytes] = set()


class UndecodableEntry(ValueError):
    """The cached bytes are not an entry of ours."""


def machine_auth_entry_decode(raw: bytes) -> MachineAuthEntry:
    entry = _decoded.get(raw)
    if entry is None:
        try:
            entry = _decode(raw)
        except (ValueError, TypeError, KeyError, AttributeError, ValidationError) as exc:
            # Only reachable with a cache backend that does not authenticate its
            # values, or after a change of the entry's shape without a version bump.
            raise UndecodableEntry(type(exc).__name__) from None
        if len(_decoded) >= _DECODED_MAX:
            _decoded.clear()
        _decoded[raw] = entry
    return entry


def _cached_entry(client_id: str, raw: bytes) -> MachineAuthEntry | None:
    """The entry in ``raw`` if it decodes and is ``client_id``'s, else None (a miss)."""
    try:
        entry = machine_auth_entry_decode(raw)
    except UndecodableEntry as exc:
        reason = str(exc)
    else:
        if entry.machine.client_id == client_id:
            return entry
        reason = "another machine's entry"
    key = hashlib.sha256(raw).digest()
    if key not in _undecodable and len(_undecodable) < 1024:
        _undecodable.add(key)
        logger.warning("machine cache: ignored an entry that is not usable (%s)", reason)
    return None


def _current(
    stored_generation: str,
    read_at: float,
    generation: str,
    now: float,
    ttl: int = MACHINE_CACHE_TTL,
) -> bool:
    """Whether what was stored under ``stored_generation`` at ``read_at`` may be served now."""
    return stored_generation == generation and now - read_at <= ttl


def _missing_marker(cached: object, generation: str, now: float) -> bool:
    """Whether ``cached`` says the client_id is unknown, under the current generation."""
    return (
        type(cached) is list
        and len(cached) == 3
        and cached[0] == _MISSING
        and type(cached[1]) is str
        and type(cached[2]) is float
        and _current(cached[1], cached[2], generation, now, MACHINE_CACHE_MISS_TTL)
    )


def _generation_of(value: object) -> str:
    # Only strings are ours; anything else (absent, a planted integer) reads as "no
    # generation", as a deleted key would, which an attacker writing Redis can do anyway.
    return value if type(value) is str else ""


def machine_auth_entry_resolve(
    client_id: str, cached: object, generation: object, *, read_at: float
) -> MachineAuthEntry | None:
    """Turn what the cache returned for ``client_id`` into an entry, loading on a miss.

    ``generation`` is the value of ``machine_generation_key`` read in the same
    MGET as ``cached``, and ``read_at`` the time taken before that MGET: a
    loaded entry is stored tagged with both, so that a change committed while
    the rows were being read (it writes a new generation after its commit)
    leaves this entry unserved.
    """
    generation = _generation_of(generation)
    if isinstance(cached, bytes):
        entry = _cached_entry(client_id, cached)
        if entry is None:
            return machine_auth_entry_load(client_id)  # not ours: a miss that does not cache
        if _current(entry.generation, entry.generation_read_at, generation, time.time()):
            return entry
    elif _missing_marker(cached, generation, time.time()):
        return None
    entry = machine_auth_entry_load(client_id)
    ttl = min(
        MACHINE_CACHE_TTL if entry else MACHINE_CACHE_MISS_TTL,
        read_at + MACHINE_CACHE_TTL - time.time(),
    )
    if ttl >= 1:  # a reader stalled past the entry's life stores nothing
        value = (
            machine_auth_entry_encode(
                replace(entry, generation=generation, generation_read_at=read_at)
            )
            if entry
            else [_MISSING, generation, read_at]
        )
        # Over an outdated entry of ours; into an empty key only, so that a value the
        # cache refused as not ours (planted, forged) is left as found, for the operators.
        write = cache.add if cached is None else cache.set
        cache_safely(write, machine_cache_key(client_id), value, int(ttl))
    return entry


def machine_cache_keys(client_id: str) -> tuple[str, str]:
    """The keys the token path reads for a machine: its entry and its generation.

    ``machine_cache_key`` and ``machine_generation_key`` in one, hashing the
    client_id once: this runs on every token request.
    """
    digest = _client_digest(client_id)
    return _ENTRY_PREFIX + digest, _GENERATION_PREFIX + digest


def machine_auth_entry_get(client_id: str) -> MachineAuthEntry | None:
    read_at = time.time()
    entry_key, generation_key = machine_cache_keys(client_id)
    values = cache_safely(cache.get_many, [entry_key, generation_key], default={})
    return machine_auth_entry_resolve(
        client_id, values.get(entry_key), values.get(generation_key), read_at=read_at
    )


MACHINE_CACHE_FAILURE_MESSAGE = (
    "The change is saved, but the cache could not be told: other processes may keep "
    f"using the previous state of this machine and its secrets for up to {MACHINE_CACHE_TTL} s. "
    "Check the cache (Redis), then repeat the action to tell it again."
)


def _invalidation_write(key: str, value: str, ttl: int, failure_message: str) -> None:
    """Write a new generation (or a previous version's tombstone), retrying once.

    A lost write leaves a revoked secret working until the entry expires
    (``MACHINE_CACHE_TTL``), so a second failure is an ERROR for the operators,
    not the WARNING of a cache that is merely away. The change itself has
    committed: raising here would only turn it into a 500.
    """
    for attempt in (1, 2):
        try:
            cache.set(key, value, ttl)
            return
        except CACHE_ERRORS as exc:
            metrics.cache_error(operation="machine_cache_invalidate")
            if attempt == 1:
                logger.warning(
                    "machine cache invalidation failed, retrying: %s", type(exc).__name__
                )
            else:
                logger.error(
                    "machine cache invalidation failed, a stale entry may live up to %d s: %s",
                    MACHINE_CACHE_TTL,
                    type(exc).__name__,
                )
                cache_failure_report(message=failure_message)


def machine_cache_invalidate(
    *, client_id: str, failure_message: str = MACHINE_CACHE_FAILURE_MESSAGE
) -> None:
    """Give the machine a new generation once the current transaction commits.

    Its entry is then served no more (whoever stores one read before the
    change tags it with the replaced generation), and the next request reads
    the machine afresh and caches it. The keys of the previous cache versions
    get a tombstone, so that during a rolling deploy a node still running the
    previous release cannot keep serving a revoked secret from its own key
    until that entry expires.
    """
    generation_key = machine_generation_key(client_id)
    previous = [
        machine_cache_key(client_id, version) for version in MACHINE_CACHE_PREVIOUS_VERSIONS
    ]

    def invalidations() -> None:
        # Random, not counted: a value once replaced never comes back.
        _invalidation_write(
            generation_key, secrets.token_hex(16), MACHINE_CACHE_GENERATION_TTL, failure_message
        )
        for key in previous:
            _invalidation_write(key, _TOMBSTONE, MACHINE_CACHE_TOMBSTONE_TTL, failure_message)

    transaction.on_commit(invalidations)
