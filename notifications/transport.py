"""Sending one delivery: an email through Django's mail backend, or a signed webhook POST.

Webhook targets are checked twice: when an endpoint is saved (its host, if
it is an address) and at every send, where the host name is resolved once,
every address it resolves to must be a public one (unless
``NOTIFICATION_WEBHOOK_ALLOW_PRIVATE``), and the connection is made to the
address that was checked, so a name that resolves to a public address for the
check and to an internal one for the connection (DNS rebinding) reaches
nothing inside. Redirects are not followed, for the same reason.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import URLValidator

from notifications.constants import ATTEMPT_ERROR_MAX, URL_MAX_LENGTH


@dataclass(frozen=True)
class SendResult:
    ok: bool
    status: int | None
    error: str


def _address_allowed(address: str) -> bool:
    if settings.NOTIFICATION_WEBHOOK_ALLOW_PRIVATE:
        return True
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global


def webhook_url_check(url: str) -> str:
    """An http(s) URL without credentials whose host, if an address, is allowed."""
    url = (url or "").strip()
    invalid = ValidationError({"url": "A webhook URL is an absolute http(s) URL."})
    if not url or len(url) > URL_MAX_LENGTH or not url.isascii() or not url.isprintable():
        raise invalid
    try:
        URLValidator(schemes=["https", "http"])(url)
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError on a port out of range)
    except (ValidationError, ValueError):
        raise invalid from None
    if parts.username or parts.password:
        raise ValidationError({"url": "Credentials in the URL are not allowed."})
    if (
        settings.PRODUCTION
        and parts.scheme != "https"
        and not (settings.NOTIFICATION_WEBHOOK_ALLOW_PRIVATE)
    ):
        raise ValidationError({"url": "Webhooks are sent over https."})
    host = parts.hostname or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        local = host == "localhost" or host.endswith(".localhost")
        if local and not settings.NOTIFICATION_WEBHOOK_ALLOW_PRIVATE:
            raise ValidationError({"url": "Private and loopback targets are refused."}) from None
        return url
    if not _address_allowed(host):
        raise ValidationError({"url": "Private and loopback targets are refused."})
    return url


def _short(text: str) -> str:
    return text.replace("\n", " ")[:ATTEMPT_ERROR_MAX]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, address: str, **kwargs):
        super().__init__(host, **kwargs)
        self._address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, address: str, **kwargs):
        super().__init__(host, context=ssl.create_default_context(), **kwargs)
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def webhook_post(*, url: str, body: bytes, headers: dict[str, str]) -> SendResult:
    """POST ``body``; a 2xx answer is a delivery, anything else (or no answer) is not."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    timeout = settings.NOTIFICATION_WEBHOOK_TIMEOUT
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return SendResult(ok=False, status=None, error=_short(f"resolve: {type(exc).__name__}"))
    addresses = [info[4][0] for info in infos]
    if not addresses or not all(_address_allowed(address) for address in addresses):
        return SendResult(ok=False, status=None, error="refused: a private or loopback address")
    kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    connection = kind(host, addresses[0], port=port, timeout=timeout)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(4096)
        status = response.status
    except (OSError, http.client.HTTPException) as exc:
        return SendResult(ok=False, status=None, error=_short(f"{type(exc).__name__}: {exc}"))
    finally:
        connection.close()
    if 200 <= status < 300:
        return SendResult(ok=True, status=status, error="")
    return SendResult(ok=False, status=status, error=f"HTTP {status}")


def email_send(*, to: str, subject: str, body: str) -> SendResult:
    try:
        sent = send_mail(subject, body, settings.NOTIFICATION_FROM_EMAIL, [to], fail_silently=False)
    except (OSError, ValueError) as exc:  # smtplib's errors are OSErrors
        return SendResult(ok=False, status=None, error=_short(f"{type(exc).__name__}: {exc}"))
    if sent != 1:
        return SendResult(ok=False, status=None, error="the mail backend sent nothing")
    return SendResult(ok=True, status=None, error="")
