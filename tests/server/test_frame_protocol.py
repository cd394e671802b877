"""``FrameProtocol`` reaches into ``websockets`` for one rule RFC 6455 allows (a close frame
between the fragments of a message): the shape it relies on is pinned in pyproject.toml and
checked here, so a ``websockets`` release that changes it fails loudly, not silently.

Before 16.0 the attribute was ``cur_size``: setting ``current_size`` did nothing there, and a
close between fragments failed the connection with 1002 instead of closing it normally.
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path

import websockets
from websockets.frames import Frame, Opcode
from websockets.protocol import Protocol, State

from tidings.server.uvloop.websocket import FrameProtocol

ROOT = Path(__file__).resolve().parents[2]


def pinned_range() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    pins = [dep for dep in project["project"]["dependencies"] if dep.startswith("websockets")]
    assert len(pins) == 1
    return pins[0].split(";")[0].removeprefix("websockets")


def test_the_installed_websockets_is_in_the_tested_range() -> None:
    low, high = (part.strip() for part in pinned_range().split(","))
    assert low.startswith(">=") and high.startswith("<")
    major = int(websockets.__version__.split(".")[0])
    assert int(low[2:].split(".")[0]) <= major < int(high[1:].split(".")[0])


def test_the_private_shape_frame_protocol_relies_on_is_there() -> None:
    protocol = FrameProtocol(state=State.OPEN, max_size=1024)
    assert "current_size" in vars(protocol), "websockets renamed its message size counter"
    assert "recv_frame" in vars(Protocol), "websockets no longer reads frames in recv_frame"
    assert "current_size" in inspect.getsource(Protocol.recv_frame)


def test_a_close_inside_a_fragmented_message_is_a_normal_close() -> None:
    protocol = FrameProtocol(state=State.OPEN, max_size=1024)
    protocol.receive_data(_masked(Frame(Opcode.TEXT, b'{"op":', fin=False)))
    protocol.receive_data(_masked(Frame(Opcode.CLOSE, b"\x03\xe8")))
    assert protocol.close_sent is not None and protocol.close_sent.code == 1000
    assert protocol.parser_exc is None


def _masked(frame: Frame) -> bytes:
    return frame.serialize(mask=True)
