"""Whole WebSocket messages from their frames, with text checked as UTF-8 on the way in.

The ``websockets`` sans-I/O protocol checks the order of frames and the size of a message
across its fragments, but hands frames over one at a time and leaves UTF-8 to the layer
above. RFC 6455 section 8.1 says a text message that is not UTF-8 fails the connection
(close code 1007). A fragmented text message is decoded incrementally, so a bad byte fails
the connection at the frame that carries it, not after the whole message has arrived.
"""

from __future__ import annotations

import codecs

_Utf8Decoder = codecs.getincrementaldecoder("utf-8")


def check_utf8(data: bytes) -> None:
    """Raise ``UnicodeDecodeError`` unless ``data`` is a complete UTF-8 text."""
    codecs.utf_8_decode(data, "strict", True)


class Fragments:
    """The frames of one message that came in several, held until its last frame.

    A connection holds one only while a fragmented message is arriving, so a connection
    that receives whole frames never builds one.
    """

    __slots__ = ("_decoder", "_parts", "text")

    def __init__(self, text: bool) -> None:
        self.text = text
        self._decoder = _Utf8Decoder() if text else None
        self._parts: list[bytes] = []

    def add(self, data: bytes, fin: bool) -> None:
        """Keep one frame's payload; raise ``UnicodeDecodeError`` as soon as text goes bad."""
        if self._decoder is not None:
            self._decoder.decode(data, fin)
        self._parts.append(data)

    def join(self) -> bytes:
        return b"".join(self._parts)
