"""`manage.py serve` relays its children's output: every line prefixed, none cut or mixed."""

from __future__ import annotations

import io
import os
import threading

import pytest

from identity_portal.management.commands.serve import prefixed_lines, relay_lines

PREFIX = b"web    | "


@pytest.mark.parametrize(
    ("data", "block", "rest"),
    [
        (b"", b"", b""),
        (b"half a line", b"", b"half a line"),
        (b"one\n", b"web    | one\n", b""),
        (b"one\ntwo\nthr", b"web    | one\nweb    | two\n", b"thr"),
        (b"\n", b"web    | \n", b""),
        (b"caf\xc3\xa9 \xff\n", b"web    | caf\xc3\xa9 \xff\n", b""),
    ],
)
def test_complete_lines_are_prefixed_and_the_unfinished_rest_is_kept(data, block, rest):
    assert prefixed_lines(data, PREFIX) == (block, rest)


def _relayed(*writes: bytes) -> bytes:
    read_fd, write_fd = os.pipe()
    sink = io.BytesIO()
    relay = threading.Thread(target=relay_lines, args=(read_fd, PREFIX, sink, threading.Lock()))
    relay.start()
    try:
        for data in writes:
            os.write(write_fd, data)
    finally:
        os.close(write_fd)
        relay.join(timeout=10)
        os.close(read_fd)
    assert not relay.is_alive()
    return sink.getvalue()


def test_a_line_written_in_pieces_comes_out_whole_and_prefixed_once():
    assert _relayed(b"GET /oauth", b"/token 200\nPOST", b" /oauth/token 401\n") == (
        b"web    | GET /oauth/token 200\nweb    | POST /oauth/token 401\n"
    )


def test_a_last_line_without_newline_is_ended_at_end_of_file():
    assert _relayed(b"Stopping\nbye") == b"web    | Stopping\nweb    | bye\n"


def test_a_large_burst_loses_no_line():
    lines = [f"line {n} {'x' * (n % 97)}\n".encode() for n in range(20_000)]
    relayed = _relayed(b"".join(lines)).splitlines(keepends=True)
    assert relayed == [PREFIX + line for line in lines]


def test_two_children_relayed_into_one_sink_never_mix_within_a_line():
    sink, lock = io.BytesIO(), threading.Lock()
    pipes = {name: os.pipe() for name in (b"web", b"wrk")}
    relays = [
        threading.Thread(target=relay_lines, args=(r, name + b" | ", sink, lock))
        for name, (r, _) in pipes.items()
    ]
    for relay in relays:
        relay.start()
    for n in range(2_000):
        for name, (_, w) in pipes.items():
            os.write(w, b"%s %d " % (name, n))
            os.write(w, b"end\n")
    for _, w in pipes.values():
        os.close(w)
    for relay in relays:
        relay.join(timeout=10)
    for r, _ in pipes.values():
        os.close(r)
    lines = sink.getvalue().splitlines()
    assert len(lines) == 4_000
    for name in (b"web", b"wrk"):
        own = [line for line in lines if line.startswith(name + b" | ")]
        assert own == [b"%s | %s %d end" % (name, name, n) for n in range(2_000)]
