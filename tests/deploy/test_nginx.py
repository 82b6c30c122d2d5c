"""The deployment recipe, tried: deploy/nginx/portal.conf in front of the real web server.

nginx runs as a subprocess with a prefix of its own under ``tmp_path``, from
the shipped configuration with only its listen ports, certificate paths and
upstream node substituted, and a throwaway self-signed certificate. The portal
behind it is the real granian server (``manage.py serve``'s argv) in production
mode, trusting the proxy's loopback address. The client connects from
127.0.0.2, so the address the proxy reports (127.0.0.2) and the proxy's own
(127.0.0.1) can be told apart in the audit trail.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from audit.models import AuditEvent
from identity_portal import access_log
from tests.deploy.conftest import NGINX
from tests.fixtures.celery_worker import _database_url
from tests.fixtures.tokens import API
from tests.identity_portal.test_web_server import _running_server, _spare_port
from tests.tokens.helpers import basic

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "deploy" / "nginx" / "portal.conf"

CLIENT = "127.0.0.2"  # the machine's address; nginx and the portal are on 127.0.0.1
# The portal behind the proxy: one worker process with two application threads.
WEB_CONCURRENCY, WEB_THREADS = 1, 2
APPLICATION_THREADS = WEB_CONCURRENCY * WEB_THREADS

pytestmark = [pytest.mark.nginx, pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for localhost and 127.0.0.1, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "portal.crt", directory / "portal.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _substituted(text: str, replacements: dict[str, str]) -> str:
    """``text`` with each key replaced; each must occur exactly once, so the test
    cannot silently run a configuration other than the shipped one."""
    for old, new in replacements.items():
        assert text.count(old) == 1, f"deploy/nginx/portal.conf no longer has {old!r} once"
        text = text.replace(old, new)
    return text


def _nginx_conf(prefix: Path, *, tls_port: int, http_port: int, upstream_port: int) -> Path:
    cert, key = _self_signed(prefix)
    site = _substituted(
        SHIPPED.read_text(),
        {
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{upstream_port};",
            "listen 80;": f"listen 127.0.0.1:{http_port};",
            "listen [::]:80;": "",
            "listen 443 ssl;": f"listen 127.0.0.1:{tls_port} ssl;",
            "listen [::]:443 ssl;": "",
            "/etc/nginx/tls/portal.crt": str(cert),
            "/etc/nginx/tls/portal.key": str(key),
        },
    )
    (prefix / "portal.conf").write_text(site)
    # What Debian's /etc/nginx/nginx.conf provides around conf.d/, kept under the prefix.
    temp_paths = "".join(
        f"    {kind}_temp_path {prefix / kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx's workers would run as nobody, who cannot enter pytest's tmp_path.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    conf = prefix / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes 1;\ndaemon off;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\n"
        "events { worker_connections 256; }\n"
        f"http {{\n    access_log {prefix / 'access.log'};\n{temp_paths}"
        f"    include {prefix / 'portal.conf'};\n}}\n"
    )
    return conf


def _wait_for_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(log.read_text()) from None
            time.sleep(0.05)


class Proxied:
    """The deployment under test: where to reach it and what it logged."""

    def __init__(self, *, base: str, plain: str, cafile: Path, portal_log: Path):
        self.base = base
        self.plain = plain
        self.cafile = cafile
        self.portal_log = portal_log

    def session(self) -> requests.Session:
        """A client connecting from ``CLIENT`` and trusting only the throwaway certificate."""
        session = requests.Session()
        session.mount("https://", _FromAddress(CLIENT))
        session.verify = str(self.cafile)
        # Neither REQUESTS_CA_BUNDLE (which would win over `verify`) nor a proxy from the
        # environment.
        session.trust_env = False
        return session


class _FromAddress(requests.adapters.HTTPAdapter):
    """Connections bound to one local address (any address in 127/8 is this host's)."""

    def __init__(self, address: str):
        self._source = (address, 0)
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        kwargs["source_address"] = self._source
        super().init_poolmanager(*args, **kwargs)


@pytest.fixture
def proxied(tmp_path, signing_key):
    """nginx with the shipped configuration in front of the portal's real web server."""
    tls_port, http_port = _spare_port(), _spare_port()
    issuer = f"https://localhost:{tls_port}"
    portal_dir, nginx_dir = tmp_path / "portal", tmp_path / "nginx"
    portal_dir.mkdir()
    nginx_dir.mkdir()
    portal_env = {
        "DJANGO_SETTINGS_MODULE": "identity_portal.settings_test",
        "DATABASE_URL": _database_url(),
        # Production mode: https is believed only from X-Forwarded-Proto, HSTS is sent.
        "DJANGO_ENV": "production",
        "ISSUER": issuer,
        "TRUSTED_PROXIES": "127.0.0.1/32",
        "WEB_CONCURRENCY": str(WEB_CONCURRENCY),
        "WEB_THREADS": str(WEB_THREADS),
    }
    with _running_server(portal_dir, **portal_env) as upstream_port:
        conf = _nginx_conf(
            nginx_dir, tls_port=tls_port, http_port=http_port, upstream_port=upstream_port
        )
        log = nginx_dir / "nginx.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [NGINX, "-p", str(nginx_dir), "-c", str(conf), "-e", str(nginx_dir / "error.log")],
                stdout=out,
                stderr=out,
            )
        try:
            _wait_for_port(tls_port, proc, nginx_dir / "error.log")
            yield Proxied(
                base=issuer,
                plain=f"http://localhost:{http_port}",
                cafile=nginx_dir / "portal.crt",
                portal_log=portal_dir / "server.log",
            )
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def _token_request(proxied: Proxied, registered, request_id: str, **headers: str):
    with proxied.session() as session:
        return session.post(
            f"{proxied.base}/oauth/token",
            data={"grant_type": "client_credentials"},
            headers={
                "Authorization": basic(registered.client_id, registered.secret),
                "X-Request-ID": request_id,
                **headers,
            },
            timeout=10,
            allow_redirects=False,
        )


def _recorded(request_ids) -> list[tuple[str, str, str | None]]:
    events = AuditEvent.objects.filter(request_id__in=list(request_ids))
    return sorted(events.values_list("request_id", "event_type", "source_ip"))


def test_a_token_over_https_and_the_client_address_the_proxy_reports(proxied, machine_factory):
    registered = machine_factory()

    answer = _token_request(proxied, registered, "nginx-plain")
    # The client's own X-Forwarded-For is overwritten by the proxy, not appended to.
    forged = _token_request(
        proxied, registered, "nginx-forged-dash", **{"X-Forwarded-For": "203.0.113.7"}
    )
    # An underscore header is dropped by the proxy; the web server would have read it
    # as X-Forwarded-For.
    underscored = _token_request(
        proxied, registered, "nginx-forged-underscore", **{"X_Forwarded_For": "203.0.113.8"}
    )

    assert [a.status_code for a in (answer, forged, underscored)] == [200, 200, 200]
    # The portal believed X-Forwarded-Proto: it knows it is behind https (HSTS is only
    # sent on a secure request) and answered rather than redirecting to https.
    assert answer.headers["Strict-Transport-Security"] == (
        "max-age=31536000; includeSubDomains; preload"
    )
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Request-ID"] == "nginx-plain"
    # A resource server verifies it with the JWKS it fetches through the same proxy.
    with proxied.session() as session:
        jwks = session.get(f"{proxied.base}/.well-known/jwks.json", timeout=10)
    access_token = answer.json()["access_token"]
    header = jwt.get_unverified_header(access_token)
    key = next(k for k in jwt.PyJWKSet.from_dict(jwks.json()).keys if k.key_id == header["kid"])
    claims = jwt.decode(
        access_token, key=key, algorithms=["ES256"], audience=API, issuer=proxied.base
    )
    assert (claims["iss"], claims["client_id"]) == (proxied.base, registered.client_id)
    assert _recorded(["nginx-plain", "nginx-forged-dash", "nginx-forged-underscore"]) == [
        ("nginx-forged-dash", "token.issued", CLIENT),
        ("nginx-forged-underscore", "token.issued", CLIENT),
        ("nginx-plain", "token.issued", CLIENT),
    ]


def test_metrics_are_not_served_through_the_proxy_and_plain_http_only_redirects(proxied):
    with requests.Session() as plain:
        plain.trust_env = False
        redirected = plain.post(
            f"{proxied.plain}/oauth/token?x=1",
            data={"grant_type": "client_credentials"},
            timeout=10,
            allow_redirects=False,
        )
    assert (redirected.status_code, redirected.headers["Location"]) == (
        301,
        "https://localhost/oauth/token?x=1",
    )
    with proxied.session() as session:
        answers = {
            path: session.get(f"{proxied.base}{path}", timeout=10, allow_redirects=False)
            for path in ("/metrics", "/metrics/", "//metrics", "/%6Detrics", "/healthz")
        }
    assert {path: a.status_code for path, a in answers.items()} == {
        "/metrics": 403,
        "/metrics/": 403,
        "//metrics": 403,
        "/%6Detrics": 403,
        "/healthz": 200,
    }
    assert answers["/metrics"].headers["Server"] == "nginx"
    assert answers["/healthz"].json() == {"status": "ok"}


def test_an_oversized_body_is_refused_by_the_proxy_and_never_reaches_the_portal(
    proxied, machine_factory
):
    registered = machine_factory()
    control = _token_request(proxied, registered, "nginx-control")
    with proxied.session() as session:
        refused = session.post(
            f"{proxied.base}/oauth/token",
            # 300 KiB: above the proxy's 256k, far below what Django itself would refuse.
            data={"grant_type": "client_credentials", "padding": "a" * 300 * 1024},
            headers={
                "Authorization": basic(registered.client_id, registered.secret),
                "X-Request-ID": "nginx-too-large",
            },
            timeout=10,
        )

    assert control.status_code == 200
    assert refused.status_code == 413
    assert refused.headers["Content-Type"] == "application/json"
    assert refused.headers["Cache-Control"] == "no-store"
    assert refused.json() == {"error": "invalid_request", "error_description": "request too large"}
    assert _recorded(["nginx-control", "nginx-too-large"]) == [
        ("nginx-control", "token.issued", CLIENT)
    ]
    # The portal's own access log names the control request and never the refused one.
    # Its lines reach the file within access_log.FLUSH_SECONDS of their response: a
    # request sent after the refused one is waited for, then that long again for any
    # worker that would have logged the refused one.
    after = _token_request(proxied, registered, "nginx-after")
    deadline = time.monotonic() + 30
    while "nginx-after" not in proxied.portal_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3 * access_log.FLUSH_SECONDS)
    portal_log = proxied.portal_log.read_text()
    assert after.status_code == 200
    assert "nginx-control" in portal_log
    assert "nginx-after" in portal_log
    assert "nginx-too-large" not in portal_log


# The slow client: all of its body but the last bytes at once, then one byte every
# DRIBBLE_INTERVAL seconds (within the proxy's 10 s client_body_timeout).
DRIBBLE_INTERVAL = 2.0
DRIBBLED_BYTES = 4


def _dribble(proxied: Proxied, registered, request_id: str, first_dribbled: threading.Event):
    """One token request whose body trickles in; returns (status line, body)."""
    body = b"grant_type=client_credentials"
    head = (
        "POST /oauth/token HTTP/1.1\r\n"
        f"Host: {proxied.base.removeprefix('https://')}\r\n"
        f"Authorization: {basic(registered.client_id, registered.secret)}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    context = ssl.create_default_context(cafile=str(proxied.cafile))
    port = int(proxied.base.rsplit(":", 1)[1])
    with (
        socket.create_connection(
            ("127.0.0.1", port), timeout=30, source_address=(CLIENT, 0)
        ) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(head + body[:-DRIBBLED_BYTES])
        for byte in body[-DRIBBLED_BYTES:]:
            time.sleep(DRIBBLE_INTERVAL)  # the dribble itself, not a wait for an outcome
            tls.sendall(bytes([byte]))
            first_dribbled.set()
        answer = b""
        while chunk := tls.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], payload


def test_a_client_dribbling_its_body_holds_no_application_thread(proxied, machine_factory):
    registered = machine_factory()
    # As many slow clients as the portal has application threads: were the body passed
    # on as it arrives, each would hold a thread and nothing else would be served.
    dribbled = [threading.Event() for _ in range(APPLICATION_THREADS)]
    normal_ids = [f"nginx-normal-{n}" for n in range(2 * APPLICATION_THREADS)]
    with ThreadPoolExecutor(APPLICATION_THREADS) as slow:
        slow_answers = [
            slow.submit(_dribble, proxied, registered, f"nginx-slow-{n}", event)
            for n, event in enumerate(dribbled)
        ]
        for event in dribbled:
            assert event.wait(timeout=15)
        with ThreadPoolExecutor(len(normal_ids)) as fast:
            answers = list(
                fast.map(lambda rid: _token_request(proxied, registered, rid), normal_ids)
            )
        # Every normal request was answered while the slow ones were still sending.
        still_sending = [not future.done() for future in slow_answers]
        slow_results = [future.result(timeout=30) for future in slow_answers]

    assert still_sending == [True] * APPLICATION_THREADS
    assert [a.status_code for a in answers] == [200] * len(normal_ids)
    assert all(a.json()["token_type"] == "Bearer" for a in answers)
    # The slow clients are served too once their body is complete.
    assert [status for status, _ in slow_results] == [b"HTTP/1.1 200 OK"] * APPLICATION_THREADS
    slow_ids = [f"nginx-slow-{n}" for n in range(APPLICATION_THREADS)]
    assert _recorded(normal_ids + slow_ids) == sorted(
        (rid, "token.issued", CLIENT) for rid in normal_ids + slow_ids
    )
