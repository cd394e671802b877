"""What only ``memory://`` promises, beside the conformance suite (test_conformance.py)."""

from __future__ import annotations

from tidings.brokers import REGISTRY, broker_for
from tidings.brokers.memory import MemoryBroker
from tidings.config import Settings, load_settings
from tidings.exceptions import ConfigError
from tidings.protocol.cursor import Cursor
from tidings.protocol.event import Event, Reset


def memory_broker(environ: dict[str, str] | None = None) -> MemoryBroker:
    broker = broker_for("memory://", load_settings(environ=environ or {}))
    assert isinstance(broker, MemoryBroker)
    return broker


def test_memory_is_registered_and_is_the_default() -> None:
    assert "memory" in REGISTRY
    assert Settings().server.broker == "memory://"
    assert isinstance(broker_for(Settings().server.broker, Settings()), MemoryBroker)


async def test_a_restart_starts_a_new_epoch_so_old_cursors_reset() -> None:
    before = memory_broker()
    old = await before.publish("news", "message", b"1")
    after = memory_broker()
    new = await after.publish("news", "message", b"1")
    assert new.epoch != old.epoch
    page = await after.history("news", old.cursor, 10)
    assert page.reset == Reset("news", new.cursor, "epoch")


async def test_each_channel_has_its_own_epoch() -> None:
    broker = memory_broker()
    epochs = {(await broker.publish(f"c{n}", "message", b"1")).epoch for n in range(20)}
    assert len(epochs) == 20


async def test_history_nowait_always_answers() -> None:
    broker = memory_broker()
    await broker.publish("news", "message", b"1")
    for since in (None, Cursor("zz", 0)):
        assert broker.history_nowait("news", since, 10) is not None
    assert broker.history_nowait("never-published", None, 10) is not None


async def test_an_event_is_stored_before_the_sink_sees_it() -> None:
    broker = memory_broker()
    seen_in_history: list[bool] = []

    def sink(event: Event) -> None:
        page = broker.history_nowait(event.channel, Cursor(event.epoch, event.offset - 1), 10)
        seen_in_history.append(page is not None and list(page.events) == [event])

    broker.start(sink, lambda channel: None)
    await broker.publish("news", "message", b"1")
    await broker.publish("news", "message", b"2")
    assert seen_in_history == [True, True]


async def test_publishing_before_start_and_after_close_delivers_nothing() -> None:
    broker = memory_broker()
    delivered: list[Event] = []
    await broker.publish("news", "message", b"1")
    broker.start(delivered.append, lambda channel: None)
    await broker.publish("news", "message", b"2")
    await broker.close()
    await broker.publish("news", "message", b"3")
    assert [event.data for event in delivered] == [b"2"]


async def test_an_infinite_history_age_is_refused_or_works() -> None:
    key = "TIDINGS_NAMESPACES_DEFAULT_HISTORY_TTL_SECONDS"
    try:
        settings = load_settings(environ={key: "inf"})
    except ConfigError as error:
        assert error.key == "namespaces.default.history_ttl_seconds"
        return
    broker = broker_for("memory://", settings)
    stored = await broker.publish("news", "message", b"1")
    page = await broker.history("news", Cursor(stored.epoch, 0), 10)
    assert list(page.events) == [stored]


async def test_reading_many_empty_channels_does_not_grow_memory_without_bound() -> None:
    from tidings.brokers import memory

    broker = memory.MemoryBroker("memory://", Settings())
    kept = await broker.publish("kept", "message", b"1")
    for index in range(3 * memory.SWEEP_AT_LEAST):
        await broker.history(f"empty-{index}", None, 0)
    assert len(broker._logs) <= 2 * memory.SWEEP_AT_LEAST
    page = await broker.history("kept", None, 0)
    assert page.cursor == kept.cursor
