"""The supervisor of ``tidings serve --workers N``, piece by piece, without processes.

The processes themselves (start, fan-out, kill -9, drain) are tested in
``tests/cluster/test_workers.py`` and ``test_worker_kill.py``.
"""

from __future__ import annotations

import socket

import pytest

from tidings.config import load_settings
from tidings.server.core.figures import Figures
from tidings.server.uvloop import workers
from tidings.server.uvloop.worker import WorkerPlan
from tidings.server.uvloop.workers import (
    RESTARTS_PER_MINUTE,
    STALE_SECONDS,
    Slot,
    describe_exit,
    not_ready,
    peers_of,
    reserve,
    restart_delay,
)


def reporting(index: int, now: float, **values: object) -> Slot:
    slot = Slot(index)
    slot.figures = Figures(**{"workers": 1, "ready": 1, **values})  # type: ignore[arg-type]
    slot.reported_at = now
    return slot


def test_port_0_is_chosen_once_and_every_worker_can_bind_it() -> None:
    held, port = reserve("127.0.0.1", 0)
    try:
        assert port > 0
        worker = socket.socket()
        worker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        worker.bind(("127.0.0.1", port))  # what each worker's create_server(reuse_port) does
        worker.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            accepted, _ = worker.accept()  # the held socket never listens: it takes nothing
            accepted.close()
        worker.close()
        stranger = socket.socket()  # a program without SO_REUSEPORT cannot take the port
        with pytest.raises(OSError):
            stranger.bind(("127.0.0.1", port))
        stranger.close()
    finally:
        for held_socket in held:
            held_socket.close()


def test_each_worker_hears_of_the_others_and_of_the_dead() -> None:
    now = 100.0
    one = reporting(1, now, deliveries={"sse": 10}, connections={"sse": 1})
    two = reporting(2, now, deliveries={"sse": 20}, connections={"sse": 2})
    three = reporting(3, now, deliveries={"sse": 30}, connections={"sse": 3})
    retired = Figures(deliveries={"sse": 5})
    peers = peers_of(one, [one, two, three], retired, restarts=1, now=now)
    assert peers.rest.deliveries == {"sse": 55}  # two, three and the dead: not itself
    assert peers.rest.connections == {"sse": 5}
    assert peers.rest.workers == 2
    assert (peers.workers, peers.restarts, peers.not_ready) == (3, 1, None)


def test_a_worker_that_drains_lost_its_broker_or_went_silent_is_not_ready() -> None:
    now = 100.0
    assert not_ready(reporting(2, now), now) is None
    assert not_ready(reporting(2, now, ready=0), now) == "worker 2 is draining"
    broker_down = reporting(2, now, broker_up=False)
    assert not_ready(broker_down, now) == "worker 2 cannot reach the broker"
    silent = reporting(3, now - STALE_SECONDS - 1)
    assert "worker 3 has not reported" in (not_ready(silent, now) or "")
    one = reporting(1, now)
    assert peers_of(one, [one, silent], Figures(), 0, now).not_ready is not None


def test_restarts_back_off_and_are_bounded_per_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        workers, "RESTART_BACKOFF", workers.Backoff(initial=0.5, maximum=10.0, random=lambda: 1.0)
    )
    slot = Slot(1)
    assert restart_delay(slot, 0.0) == 0.5
    slot.crashes = 3
    assert restart_delay(slot, 0.0) == 4.0
    slot.crashes = 0
    slot.restarts.extend(float(t) for t in range(RESTARTS_PER_MINUTE))
    assert restart_delay(slot, 10.0) == pytest.approx(50.0)  # until the oldest is a minute old
    assert restart_delay(slot, 61.5) == 0.5  # that one has left the window
    assert len(slot.restarts) == RESTARTS_PER_MINUTE - 2


def test_the_plan_crosses_the_pipe_whole() -> None:
    settings = load_settings(environ={}, flags={"workers": 2, "broker": "redis://127.0.0.1"})
    plan = WorkerPlan(settings, 2, "info")
    line = plan.to_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert WorkerPlan.from_line(line) == plan


def test_exits_are_described_by_status_or_signal() -> None:
    assert describe_exit(-9) == "was killed by SIGKILL"
    assert describe_exit(3) == "exited with status 3"
