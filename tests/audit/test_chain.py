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
