"""Reading what wrk measured, and the request it sends."""

from __future__ import annotations

import base64

from bench.load import Target, parse_latency_distribution, threads_for

# As wrk prints it, trailing space after a seconds value included.
WRK_OUTPUT = (
    "Running 3s test @ http://127.0.0.1:8100\n"
    "  2 threads and 16 connections\n"
    "  Latency Distribution\n"
    "     50%  812.00us\n"
    "     75%    4.95ms\n"
    "     90%    7.10ms\n"
    "     99%    1.20s \n"
    "  9000 requests in 3.00s, 2.00MB read\n"
)


def test_latency_distribution_in_milliseconds_whatever_the_unit():
    assert parse_latency_distribution(WRK_OUTPUT) == {
        "p50": 0.812,
        "p75": 4.95,
        "p90": 7.1,
        "p99": 1200.0,
    }


def test_no_distribution_when_wrk_printed_none():
    assert parse_latency_distribution("Running 3s test\n0 requests in 3.00s\n") == {}


def test_basic_credentials_are_form_encoded_before_base64():
    target = Target("t", "http://127.0.0.1:1/oauth/token", "", [("id:1", "s+e/c r%t")])

    (header,) = target.authorization_headers()

    assert header.startswith("Basic ")
    assert base64.b64decode(header[6:]) == b"id%3A1:s%2Be%2Fc%20r%25t"


def test_threads_never_exceed_two_or_the_connections():
    assert [threads_for(c) for c in (1, 4, 16, 64)] == [1, 2, 2, 2]
