"""The chain rules shared by the sealer and the offline verifier (no database)."""

from datetime import UTC, datetime, timedelta, timezone

import pytest

from audit import chain


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_utf8():
    assert chain.canonical_json({"b": 1, "a": ["é", None]}) == '{"a":["é",null],"b":1}'.encode()


def test_timestamps_are_utc_with_microseconds():
    moment = datetime(2026, 1, 2, 4, 4, 5, 6, tzinfo=timezone(timedelta(hours=1)))

    assert chain.format_timestamp(moment) == "2026-01-02T03:04:05.000006Z"
    with pytest.raises(ValueError):
        chain.format_timestamp(datetime(2026, 1, 2))  # noqa: DTZ001


def test_jwk_thumbprint_matches_rfc_8037_example():
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}

    assert chain.jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_event_hash_covers_the_record_and_the_previous_hash():
    record = dict.fromkeys(chain.RECORD_FIELDS, "")
    record.update(position=1, details={}, source_ip=None)
    record["occurred_at"] = chain.format_timestamp(datetime(2026, 1, 1, tzinfo=UTC))

    first = chain.event_hash(record, chain.GENESIS_HASH)

    assert len(first) == 64
    assert chain.event_hash(record, "1" * 64) != first
    assert chain.event_hash({**record, "reason": "x"}, chain.GENESIS_HASH) != first


def test_b64url_writes_the_unpadded_url_safe_alphabet():
    assert chain.b64url(b"\xfb\xff") == "-_8"
    assert chain.b64url(b"\x00\x00\x17") == "AAAX"
    assert chain.b64url(b"") == ""


@pytest.mark.parametrize(
    ("value", "data"), [("-_8", b"\xfb\xff"), ("AAAX", b"\x00\x00\x17"), ("AA", b"\x00"), ("", b"")]
)
def test_b64url_decode_reads_what_b64url_writes(value, data):
    assert chain.b64url_decode(value) == data


@pytest.mark.parametrize(
    "value", ["-_8=", "AAAX=", "AA==", "+/8", "-_9", "-_8 ", "-_$8", "A", 3, None]
)
def test_b64url_decode_refuses_every_other_spelling(value):
    # A signature spelled another way would verify, yet change its checkpoint's digest.
    with pytest.raises(ValueError, match=r"^not base64url$"):
        chain.b64url_decode(value)


def test_b64url_decode_reads_what_b64url_writes_at_every_length():
    # Every padding a value of 0 to 3 bytes past a whole block needs, over a few blocks.
    for size in range(64):
        data = bytes(range(size))
        assert chain.b64url_decode(chain.b64url(data)) == data


def test_a_naive_timestamp_is_refused_with_its_reason():
    with pytest.raises(ValueError, match=r"^audit timestamps must be timezone-aware$"):
        chain.format_timestamp(datetime(2026, 1, 2))  # noqa: DTZ001


def test_canonical_json_refuses_what_json_cannot_spell():
    for value in (float("nan"), float("inf"), {"a": float("-inf")}):
        with pytest.raises(ValueError, match="JSON compliant"):
            chain.canonical_json(value)


def test_event_record_spells_timestamps_and_addresses_as_hashed():
    import ipaddress

    values = dict.fromkeys(chain.RECORD_FIELDS, "x")
    values.update(
        position=7,
        occurred_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        sealed_at="2026-01-02T03:04:06.000000Z",
        source_ip=ipaddress.ip_address("2001:db8::1"),
        details={"n": 1},
        extra="not hashed",
    )

    record = chain.event_record(values)

    assert list(record) == list(chain.RECORD_FIELDS)
    assert record == {
        **dict.fromkeys(chain.RECORD_FIELDS, "x"),
        "position": 7,
        "occurred_at": "2026-01-02T03:04:05.000006Z",
        "sealed_at": "2026-01-02T03:04:06.000000Z",
        "source_ip": "2001:db8::1",
        "details": {"n": 1},
    }
    assert chain.event_record({**values, "source_ip": None})["source_ip"] is None
    # A timestamp-like value in another field is hashed as it is.
    when = datetime(2026, 1, 2, tzinfo=UTC)
    assert chain.event_record({**values, "details": when})["details"] is when


@pytest.mark.parametrize(
    "jwk",
    [
        {"kty": "RSA", "crv": "Ed25519", "x": "AA"},
        {"kty": "OKP", "crv": "X25519", "x": "AA"},
        {"crv": "Ed25519", "x": "AA"},
        {"kty": "OKP", "x": "AA"},
    ],
)
def test_only_ed25519_okp_keys_are_audit_keys(jwk):
    with pytest.raises(ValueError, match=r"^audit keys are Ed25519 OKP keys$"):
        chain.public_key_from_jwk(jwk)


def test_timestamps_do_not_depend_on_the_servers_local_zone(monkeypatch):
    # A sealer on a host whose local zone is not UTC must hash the same strings.
    import time

    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        moment = datetime(2026, 1, 2, 4, 4, 5, 6, tzinfo=timezone(timedelta(hours=1)))
        assert chain.format_timestamp(moment) == "2026-01-02T03:04:05.000006Z"
    finally:
        monkeypatch.undo()
        time.tzset()
