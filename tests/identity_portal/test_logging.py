import json
import logging
import sys

from identity_portal import access_log
from identity_portal.log import JsonFormatter, RequestIdFilter, redact, request_id_var

SECRET = "mip_cs_Zm9vYmFyYmF6cXV4MDEyMzQ1Njc4OWFiY2RlZmdoaWprbA"
JWT = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJtIn0.c2lnbmF0dXJlLWJ5dGVz"


def test_redact_removes_every_credential_shape():
    text = (
        f"secret={SECRET} token {JWT} Authorization: Basic Ym90OnNlY3JldA== "
        "Bearer abc.def.ghi client_secret=plain-text-secret&x=1 "
        '{"password": "hunter2hunter2"} '
        "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----"
    )

    cleaned = redact(text)

    for leaked in (
        SECRET,
        JWT,
        "Ym90OnNlY3JldA==",
        "abc.def.ghi",
        "plain-text-secret",
        "hunter2hunter2",
        "MIIB",
    ):
        assert leaked not in cleaned
    assert "x=1" in cleaned


def test_redaction_ignores_case_and_the_letters_that_fold_onto_ascii():
    text = (
        "BEARER abc.def.ghi PASSWORD=hunter2hunter2 Token: t0ps3cret "
        # The long s and the dotless i match s and i case-insensitively.
        "pa\u017f\u017fword=folded-secret ba\u017f\u0131c Zm9sZGVk"
    )

    assert redact(text) == (
        "BEARER [REDACTED] PASSWORD=[REDACTED] Token: [REDACTED] "
        "pa\u017f\u017fword=[REDACTED] ba\u017f\u0131c [REDACTED]"
    )


def test_a_line_without_any_credential_shape_is_left_as_it_is():
    line = '127.0.0.1 "POST /oauth/token" 200 1.2ms token_type=Bearer'

    assert redact(line) == line


def test_records_are_redacted_before_any_handler_sees_them(caplog):
    logger = logging.getLogger("oauthlib.test")
    with caplog.at_level(logging.DEBUG, logger="oauthlib.test"):
        logger.debug("client authenticated with %s and got %r", SECRET, JWT)

    assert caplog.records[0].getMessage() == (
        "client authenticated with [REDACTED] and got '[REDACTED]'"
    )


def test_json_formatter_emits_one_object_with_the_request_id():
    token = request_id_var.set("req-12345678")
    try:
        record = logging.getLogger("portal").makeRecord(
            "portal", logging.INFO, __file__, 1, "issued to %s", ("m1",), None
        )
        RequestIdFilter().filter(record)
        line = JsonFormatter().format(record)
    finally:
        request_id_var.reset(token)

    payload = json.loads(line)
    assert payload["message"] == "issued to m1"
    assert payload["request_id"] == "req-12345678"
    assert payload["level"] == "INFO"
    assert payload["logger"] == "portal"


def _raise_with_a_secret():
    client_secret = SECRET  # noqa: F841 (a local a traceback formatter could show)
    raise ValueError(f"bad client_secret={SECRET} in Authorization: Bearer {JWT}")


def test_text_formatter_redacts_tracebacks():
    from django.conf import settings

    from identity_portal.log import TextFormatter

    assert settings.LOGGING["formatters"]["text"]["()"] == "identity_portal.log.TextFormatter"
    formatter = TextFormatter(settings.LOGGING["formatters"]["text"]["format"])
    try:
        _raise_with_a_secret()
    except ValueError:
        record = logging.getLogger("portal").makeRecord(
            "portal", logging.ERROR, __file__, 1, "failed", (), sys.exc_info(), sinfo="stack"
        )
    RequestIdFilter().filter(record)
    record.stack_info = f"Stack (most recent call last):\n  token={SECRET}"

    line = formatter.format(record)

    assert "ValueError: bad client_secret=[REDACTED] in Authorization: Bearer [REDACTED]" in line
    assert "token=[REDACTED]" in line
    assert SECRET not in line
    assert JWT not in line


def test_text_formatter_redacts_a_traceback_another_formatter_cached():
    from identity_portal.log import TextFormatter

    try:
        _raise_with_a_secret()
    except ValueError:
        record = logging.getLogger("portal").makeRecord(
            "portal", logging.ERROR, __file__, 1, "failed", (), sys.exc_info()
        )
    logging.Formatter().format(record)  # a plain handler ran first and cached exc_text
    assert SECRET in record.exc_text

    line = TextFormatter("%(message)s").format(record)

    assert line.startswith("failed\nTraceback (most recent call last):")
    assert SECRET not in line
    assert JWT not in line


def test_the_configured_console_handler_uses_the_text_formatter():
    from identity_portal.log import TextFormatter

    formatters = [
        handler.formatter
        for handler in logging.getLogger().handlers
        if type(handler) is logging.StreamHandler
    ]

    assert any(isinstance(formatter, TextFormatter) for formatter in formatters)


def test_access_log_escapes_control_characters_in_the_path(client, caplog):
    with caplog.at_level(logging.INFO, logger="identity_portal.access"):
        client.get("/nowhere%0D%0A2026-01-01 INFO forged [-] line%00%E2%80%A8%22%5C%C3%A9")
        access_log.flush()

    [record] = [r for r in caplog.records if r.name == "identity_portal.access"]
    message = record.getMessage()
    assert "\n" not in message
    assert "\r" not in message
    assert (
        '"GET /nowhere\\x0d\\x0a2026-01-01 INFO forged [-] line\\x00\\u2028\\x22\\x5cé" 404'
        in message
    )
