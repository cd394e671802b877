"""The mount's bounded queue counts what waits as an asyncio transport counts its buffer.

The end-to-end proofs (a stalled reader is cut or lags, a fast one gets a batch larger than
the limit) are tests/server/test_slow_consumer.py, run on both edges.
"""

from __future__ import annotations

from tidings.asgi.sink import QueueSink
from tidings.server.core.exchange import Sink

LIMIT = 4096


class Recorder:
    """A session that records the sink's backpressure calls."""

    transport: Sink

    def __init__(self) -> None:
        self.address = ""
        self.calls: list[str] = []

    @property
    def kind(self) -> str:
        return "stream"

    def connection_lost(self, exc: Exception | None) -> None:
        self.calls.append("lost")

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")


async def test_a_write_the_idle_writer_takes_at_once_is_not_waiting() -> None:
    session = Recorder()
    sink = QueueSink(session, LIMIT)
    sink.write(b"x" * (LIMIT * 3))  # one batch larger than the limit, to a client keeping up
    assert session.calls == []
    assert sink.get_write_buffer_size() == 0
    assert await sink.next_chunk() == b"x" * (LIMIT * 3)
    sink.sent()
    assert session.calls == []


async def test_writes_past_the_limit_while_a_send_is_under_way_pause_the_session() -> None:
    session = Recorder()
    sink = QueueSink(session, LIMIT)
    sink.write(b"a" * 100)
    assert await sink.next_chunk() == b"a" * 100  # handed to send, which does not return yet
    sink.write(b"b" * LIMIT)
    assert session.calls == []  # at the limit, not past it
    sink.write(b"c")
    assert session.calls == ["pause"]
    assert sink.get_write_buffer_size() == LIMIT + 1
    sink.sent()  # the first chunk went out; the queue still holds more than a quarter
    assert session.calls == ["pause"]
    assert await sink.next_chunk() == b"b" * LIMIT + b"c"
    sink.sent()
    assert session.calls == ["pause", "resume"]
    assert sink.get_write_buffer_size() == 0


async def test_a_second_write_before_the_writer_runs_is_waiting() -> None:
    session = Recorder()
    sink = QueueSink(session, LIMIT)
    sink.write(b"a" * LIMIT)  # the idle writer takes this one
    sink.write(b"b" * LIMIT)
    assert session.calls == []
    assert sink.get_write_buffer_size() == LIMIT
    sink.write(b"c")
    assert session.calls == ["pause"]


async def test_abort_drops_what_waits_and_ends_the_writer() -> None:
    session = Recorder()
    sink = QueueSink(session, LIMIT)
    sink.write(b"a")
    sink.abort()
    assert sink.get_write_buffer_size() == 0
    assert await sink.next_chunk() is None
    sink.write(b"b")  # after the end: nothing is queued
    assert sink.get_write_buffer_size() == 0
    assert sink.is_closing()
