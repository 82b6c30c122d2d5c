import json
import logging

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
