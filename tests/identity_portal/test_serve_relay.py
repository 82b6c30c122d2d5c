"""`manage.py serve` relays its children's output: a prefix per line, whole lines only."""

from __future__ import annotations

import io
import os
import threading

from identity_portal.management.commands.serve import relay


def test_lines_are_prefixed_and_a_partial_line_waits_for_its_end():
    read_fd, write_fd = os.pipe()
    out = io.BytesIO()
    os.write(write_fd, b"first\nsec")
    os.write(write_fd, b"ond\n")
    os.write(write_fd, b"no newline at the end")
    os.close(write_fd)

    relay(read_fd, out, prefix=b"web | ", lock=threading.Lock())
    os.close(read_fd)

    assert out.getvalue() == b"web | first\nweb | second\nweb | no newline at the end\n"


def test_an_empty_stream_writes_nothing():
    read_fd, write_fd = os.pipe()
    os.close(write_fd)
    out = io.BytesIO()

    relay(read_fd, out, prefix=b"worker | ", lock=threading.Lock())
    os.close(read_fd)

    assert out.getvalue() == b""
