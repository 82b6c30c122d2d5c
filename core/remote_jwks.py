"""Public keys fetched from elsewhere: a JWKS by URL, or an OIDC issuer's through its discovery.

Two callers: ``private_key_jwt`` machines that publish their keys at a
``jwks_uri``, and federation trusts whose issuer (GitHub Actions, GitLab, a
Kubernetes API server, any OIDC provider) publishes its keys through
``/.well-known/openid-configuration``. Both hand us a URL that someone typed,
and the portal fetches it from inside the network, so the fetch is where
server-side request forgery would happen. It is therefore narrow:

- ``https://`` only; a plain ``http://`` URL only with ``allow_private`` and
  only when every address of its host is a loopback address (a test's or a
  sidecar's issuer), never across a network;
- the host is resolved first (within the time limit) and *every* address it
  resolves to must be public unless ``allow_private``; the connection then
  goes to one of the checked addresses, with TLS verifying the certificate
  for the host name, so a DNS answer that changes between check and connect
  (rebinding) cannot send us elsewhere;
- no redirects, no compression, one time limit for the whole exchange
  (``FETCH_TIMEOUT``) and a size limit on the body (``MAX_DOCUMENT_BYTES``).

What is fetched is parsed with ``core.jose`` into public keys only, each
bound to one algorithm of its allow-list (a JWKS entry carrying a private or
symmetric member, or naming an algorithm outside the list, is left out). The
key documents (never parsed key objects, never pickles) are kept in the shared
cache, whose values are authenticated envelopes (``identity_portal.cache``),
and parsed once per process. Keys are fresh for ``KEYS_FRESH_FOR`` seconds;
an unknown ``kid`` triggers a refetch at most once per ``REFETCH_INTERVAL``
per URL across all processes (key rotation is picked up, a stream of made-up
kids is not a stream of fetches). When keys are stale and cannot be fetched,
every verification fails (fail closed): there is no fallback to old keys.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.core.cache import cache
from redis.exceptions import RedisError

from core import jose

logger = logging.getLogger(__name__)

# One limit for resolving, connecting, the TLS handshake and reading the whole body.
FETCH_TIMEOUT = 5.0
# GitHub's JWKS is about 3 KB, a Kubernetes API server's under 2 KB.
MAX_DOCUMENT_BYTES = 128 * 1024
MAX_KEYS = 64
MAX_URL_LENGTH = 2048
# Keys are used this long before the next request fetches them again.
KEYS_FRESH_FOR = 300
# An unknown kid refetches at most this often per URL (across every process).
REFETCH_INTERVAL = 60
# After a failed fetch, this process does not try the same URL again for this long.
FAILURE_BACKOFF = 10
CACHE_VERSION = 1
# What the shared cache raises when Redis is away, or the file cache's disk fails.
_CACHE_ERRORS = (RedisError, OSError)

_RSA_ALGORITHMS = (jose.RS256, jose.PS256)
_DEFAULT_ALGORITHMS = {
    ("EC", "P-256"): (jose.ES256,),
    ("EC", "P-384"): (jose.ES384,),
    ("OKP", "Ed25519"): (jose.EDDSA,),
}


class RemoteKeysError(Exception):
    """The keys cannot be had (refused URL, unreachable, malformed, unknown kid).

    ``reason`` is a short code for the audit trail; the caller answers every
    one of them the same way.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the URL and the addresses ----------------------------------------------


def url_check(url: str, *, allow_private: bool) -> None:
    """Refuse a URL we would never fetch (``ValueError``), without resolving it.

    Used when a URL is saved, so an admin hears at once that ``http://`` or a
    user-info part will not do; the addresses are checked again at each fetch.
    """
    if not isinstance(url, str) or len(url) > MAX_URL_LENGTH or not url.isascii():
        raise ValueError("not a URL we fetch")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError("not a valid URL") from exc
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError("an https:// URL is required")
    if parts.scheme == "http" and not allow_private:
        raise ValueError("an https:// URL is required")
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError("a URL without user info or fragment is required")
    if port == 0:
        raise ValueError("not a valid port")
    if any(ch.isspace() for ch in url):
        raise ValueError("not a valid URL")


def _address_allowed(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_private):
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_unspecified or address.is_multicast:
        return False
    return allow_private or address.is_global


_resolver = concurrent.futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="jwks-dns")


def _resolve(host: str, port: int, timeout: float) -> list[tuple[int, str]]:
    """(family, address) of every address of ``host``, within ``timeout`` seconds.

    ``getaddrinfo`` has no timeout of its own, so it runs on a small pool and
    the caller gives up waiting (the lookup finishes in the background).
    """
    try:
        infos = _resolver.submit(
            socket.getaddrinfo, host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        ).result(timeout=timeout)
    except concurrent.futures.TimeoutError as exc:
        raise RemoteKeysError("dns_timeout") from exc
    except (OSError, UnicodeError) as exc:
        raise RemoteKeysError("dns_failure") from exc
    return [(family, sockaddr[0]) for family, _, _, _, sockaddr in infos]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to an address we checked, whatever the name resolves to by then."""

    def __init__(self, host: str, port: int, *, address: tuple[int, str], timeout: float):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def _pinned_socket(self) -> socket.socket:
        family, ip = self._address
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect((ip, self.port))
        except OSError:
            sock.close()
            raise
        return sock

    def connect(self) -> None:
        self.sock = self._pinned_socket()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    _tls = ssl.create_default_context()

    def connect(self) -> None:
        # The certificate is verified for the host name (SNI too), not the address.
        self.sock = self._tls.wrap_socket(self._pinned_socket(), server_hostname=self.host)


def fetch_json(url: str, *, allow_private: bool) -> Any:
    """GET ``url`` under the rules above and parse its body as JSON; ``RemoteKeysError`` else."""
    try:
        url_check(url, allow_private=allow_private)
    except ValueError as exc:
        raise RemoteKeysError("url_refused") from exc
    deadline = time.monotonic() + FETCH_TIMEOUT
    parts = urlsplit(url)
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port, FETCH_TIMEOUT)
    if not addresses:
        raise RemoteKeysError("dns_failure")
    for _, ip in addresses:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
        if not _address_allowed(address, allow_private=allow_private):
            raise RemoteKeysError("address_refused")
        if parts.scheme == "http" and not address.is_loopback:
            raise RemoteKeysError("address_refused")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    last_error = "connect_failed"
    for address in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RemoteKeysError("timeout")
        connection_class = (
            _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
        )
        connection = connection_class(host, port, address=address, timeout=remaining)
        try:
            connection.connect()
        except ssl.SSLError as exc:
            connection.close()
            raise RemoteKeysError("tls_failure") from exc
        except OSError:
            connection.close()
            continue
        try:
            return json.loads(_get(connection, path, deadline))
        except RemoteKeysError:
            raise
        except (ValueError, RecursionError) as exc:
            raise RemoteKeysError("not_json") from exc
        except (OSError, http.client.HTTPException) as exc:
            last_error = "timeout" if isinstance(exc, TimeoutError) else "http_failure"
            raise RemoteKeysError(last_error) from exc
        finally:
            connection.close()
    raise RemoteKeysError(last_error)


def _get(connection: http.client.HTTPConnection, path: str, deadline: float) -> bytes:
    connection.request(
        "GET",
        path,
        headers={
            "Accept": "application/json, application/jwk-set+json",
            "Accept-Encoding": "identity",
            "User-Agent": "machine-identity-portal",
        },
    )
    # Held here: http.client drops its reference when the server says it will close.
    sock = connection.sock
    response = connection.getresponse()
    if response.status != 200:
        raise RemoteKeysError(f"http_{response.status}" if 100 <= response.status < 600 else "http")
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_DOCUMENT_BYTES:
        raise RemoteKeysError("too_large")
    body = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RemoteKeysError("timeout")
        sock.settimeout(remaining)
        # read1: at most one read of the socket, so a server trickling bytes
        # cannot stretch one call past the deadline.
        chunk = response.read1(16 * 1024)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > MAX_DOCUMENT_BYTES:
            raise RemoteKeysError("too_large")


# --- key sets ---------------------------------------------------------------


@dataclass(frozen=True)
class KeySet:
    """Parsed public keys: (kid, algorithm) -> a ``core.jose.Verifier`` of that one algorithm."""

    verifiers: Mapping[tuple[str, str], jose.Verifier]

    def verifier(self, *, kid: Any, alg: Any) -> jose.Verifier | None:
        if not isinstance(kid, str) or not isinstance(alg, str):
            return None
        return self.verifiers.get((kid, alg))

    def __len__(self) -> int:
        return len(self.verifiers)


def _algorithms(jwk: Mapping[str, Any]) -> tuple[str, ...]:
    alg = jwk.get("alg")
    if alg is not None:
        return (alg,) if alg in jose.ALGORITHMS else ()
    if jwk.get("kty") == "RSA":
        return _RSA_ALGORITHMS
    return _DEFAULT_ALGORITHMS.get((jwk.get("kty"), jwk.get("crv")), ())


def keyset_from_jwks(document: Any) -> KeySet:
    """The signing keys of a JWKS (RFC 7517 section 5) we can use; ``ValueError`` if none.

    A key is left out, not the set refused, when it is for encryption, of an
    unsupported type or curve, private or symmetric, or names an algorithm
    outside the allow-list: issuers publish such keys beside good ones.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS is a JSON object with a keys array")
    keys = document["keys"]
    if len(keys) > MAX_KEYS:
        raise ValueError(f"at most {MAX_KEYS} keys")
    verifiers: dict[tuple[str, str], jose.Verifier] = {}
    for jwk in keys:
        if not isinstance(jwk, Mapping) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            continue
        for algorithm in _algorithms(jwk):
            try:
                verifier = jose.verifier_from_jwk(jwk, algorithm=algorithm, kid=kid)
            except jose.InvalidJWK:
                continue
            verifiers.setdefault((verifier.kid, algorithm), verifier)
    if not verifiers:
        raise ValueError("no usable signing key")
    return KeySet(verifiers=verifiers)


def public_jwks(document: Any) -> list[dict[str, Any]]:
    """The public members of each usable key of a JWKS, for storing (nothing private kept)."""
    keyset_from_jwks(document)  # refuses a set with no usable key
    kept = []
    for jwk in document["keys"]:
        if not isinstance(jwk, Mapping):
            continue
        try:
            key = jose.public_key_from_jwk(jwk)
        except jose.InvalidJWK:
            continue
        member = jose.public_jwk(key)
        for name in ("kid", "alg", "use"):
            if isinstance(jwk.get(name), str):
                member[name] = jwk[name]
        kept.append(member)
    return kept


# Per process: a parsed pasted JWKS by its canonical text (parsing RSA keys costs).
_parsed: dict[str, KeySet] = {}
_PARSED_MAX = 256


def keyset_from_json(text: str) -> KeySet:
    """A JWKS stored as JSON text (a pasted one), parsed once per process."""
    keyset = _parsed.get(text)
    if keyset is None:
        keyset = keyset_from_jwks(json.loads(text))
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[text] = keyset
    return keyset


# --- fetched key sets, cached -----------------------------------------------

# Per process, by cache key: (fetched_at, keys document, parsed keys).
_memo: dict[str, tuple[float, list, KeySet]] = {}
# Per process, by cache key: the time before which this process does not fetch again
# (after a failure) or refetch on an unknown kid (after a refetch).
_failed_until: dict[str, float] = {}
_refetch_until: dict[str, float] = {}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def reset() -> None:
    """Forget every per-process memo (a new test, or a new process's state)."""
    _memo.clear()
    _failed_until.clear()
    _refetch_until.clear()
    _parsed.clear()


def _cache_key(kind: str, locator: str) -> str:
    digest = hashlib.sha256(f"{kind}\x00{locator}".encode()).hexdigest()[:40]
    return f"core:remote-keys:v{CACHE_VERSION}:{digest}"


def _cache_call(call, *args, default=None):
    try:
        return call(*args)
    except _CACHE_ERRORS as exc:
        logger.warning("remote keys: cache unavailable (%s)", type(exc).__name__)
        return default


def _lock(key: str) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(key, threading.Lock())


def _remember(key: str, fetched_at: float, keys: list) -> KeySet | None:
    memo = _memo.get(key)
    if memo is not None and memo[0] == fetched_at and memo[1] == keys:
        return memo[2]
    try:
        keyset = keyset_from_jwks({"keys": keys})
    except ValueError:
        return None
    _memo[key] = (fetched_at, keys, keyset)
    return keyset


def _from_shared_cache(key: str, locator: str) -> tuple[float, KeySet] | None:
    entry = _cache_call(cache.get, key)
    if (
        not isinstance(entry, dict)
        or entry.get("locator") != locator
        or not isinstance(entry.get("fetched_at"), int | float)
        or not isinstance(entry.get("keys"), list)
    ):
        return None
    keyset = _remember(key, float(entry["fetched_at"]), entry["keys"])
    return None if keyset is None else (float(entry["fetched_at"]), keyset)


def _fetch_keys(kind: str, locator: str, allow_private: bool) -> list:
    if kind == "issuer":
        discovery = fetch_json(
            locator.rstrip("/") + "/.well-known/openid-configuration", allow_private=allow_private
        )
        # OpenID Connect Discovery 1.0 section 4.3: the document names the same issuer.
        if not isinstance(discovery, Mapping) or discovery.get("issuer") != locator:
            raise RemoteKeysError("discovery_issuer_mismatch")
        jwks_uri = discovery.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise RemoteKeysError("discovery_without_jwks_uri")
    else:
        jwks_uri = locator
    document = fetch_json(jwks_uri, allow_private=allow_private)
    try:
        return public_jwks(document)
    except ValueError as exc:
        raise RemoteKeysError("jwks_unusable") from exc


def _refresh(key: str, kind: str, locator: str, allow_private: bool, seen: float) -> KeySet:
    """Fetch, store and return the keys; one fetch per URL at a time in this process.

    ``seen`` is the fetch time of the keys the caller found wanting: a thread
    that waited for another one's fetch uses its result instead of fetching again.
    """
    with _lock(key):
        memo = _memo.get(key)
        if memo is not None and memo[0] > seen:
            return memo[2]
        now = time.time()
        if _failed_until.get(key, 0.0) > now:
            raise RemoteKeysError("recently_unreachable")
        try:
            keys = _fetch_keys(kind, locator, allow_private)
        except RemoteKeysError as exc:
            _failed_until[key] = now + FAILURE_BACKOFF
            logger.warning("remote keys: fetching the keys of %s failed: %s", locator, exc.reason)
            raise
        _failed_until.pop(key, None)
        fetched_at = time.time()
        entry = {"locator": locator, "fetched_at": fetched_at, "keys": keys}
        # Kept past their freshness so that an unknown-kid refetch limit outlives them.
        _cache_call(cache.set, key, entry, KEYS_FRESH_FOR + REFETCH_INTERVAL)
        keyset = _remember(key, fetched_at, keys)
        if keyset is None:  # cannot happen: public_jwks refused an unusable set
            raise RemoteKeysError("jwks_unusable")
        return keyset


def _refetch_allowed(key: str, now: float) -> bool:
    """One unknown-kid refetch per URL per ``REFETCH_INTERVAL`` window, across processes.

    Per process at most one per interval; across processes one per clock window,
    so at most two within any interval.
    """
    if _refetch_until.get(key, 0.0) > now:
        return False
    _refetch_until[key] = now + REFETCH_INTERVAL
    # Whoever adds the marker of this minute first refetches; without the cache, this
    # process decides. The minute is in the key (not only in the expiry) so that the
    # limit follows the clock the portal reads, not the cache server's.
    window = int(now // REFETCH_INTERVAL)
    marker = f"{key}:refetch:{window}"
    return bool(_cache_call(cache.add, marker, 1, 2 * REFETCH_INTERVAL, default=True))


def _verifier(kind: str, locator: str, *, kid: Any, alg: Any, allow_private: bool):
    key = _cache_key(kind, locator)
    now = time.time()
    memo = _memo.get(key)
    fetched_at, keyset = (memo[0], memo[2]) if memo is not None else (0.0, None)
    if keyset is None or now - fetched_at >= KEYS_FRESH_FOR:
        shared = _from_shared_cache(key, locator)
        if shared is not None and now - shared[0] < KEYS_FRESH_FOR:
            fetched_at, keyset = shared
        else:
            # Stale or never fetched: fetch, and refuse if that fails (fail closed).
            keyset = _refresh(key, kind, locator, allow_private, fetched_at)
            fetched_at = _memo[key][0]
    verifier = keyset.verifier(kid=kid, alg=alg)
    if verifier is not None:
        return verifier
    # Unknown kid: another process may have fetched newer keys already ...
    shared = _from_shared_cache(key, locator)
    if shared is not None and shared[0] > fetched_at:
        verifier = shared[1].verifier(kid=kid, alg=alg)
        if verifier is not None:
            return verifier
        fetched_at = shared[0]
    # ... else the issuer may have rotated: refetch, at most once a minute per URL.
    if not isinstance(kid, str) or not _refetch_allowed(key, now):
        raise RemoteKeysError("unknown_kid")
    try:
        keyset = _refresh(key, kind, locator, allow_private, fetched_at)
    except RemoteKeysError as exc:
        raise RemoteKeysError(f"unknown_kid_refetch_failed:{exc.reason}") from exc
    verifier = keyset.verifier(kid=kid, alg=alg)
    if verifier is None:
        raise RemoteKeysError("unknown_kid")
    return verifier


def jwks_uri_verifier(url: str, *, kid: Any, alg: Any, allow_private: bool) -> jose.Verifier:
    """The key ``kid`` of the JWKS at ``url`` for algorithm ``alg``, or ``RemoteKeysError``."""
    return _verifier("jwks", url, kid=kid, alg=alg, allow_private=allow_private)


def issuer_verifier(issuer: str, *, kid: Any, alg: Any, allow_private: bool) -> jose.Verifier:
    """The key ``kid`` of OIDC issuer ``issuer`` (through its discovery document), or raise."""
    return _verifier("issuer", issuer, kid=kid, alg=alg, allow_private=allow_private)
