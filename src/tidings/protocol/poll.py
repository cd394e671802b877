"""Poll response bodies (docs/protocol.md section 5)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from tidings.protocol.event import Event, Reset


def etag(cursor_list: str) -> bytes:
    """A poll answer's ``ETag``: its cursor list, quoted. A poll that sends it back in
    ``If-None-Match`` and finds nothing new gets ``304``."""
    return b'"' + cursor_list.encode("ascii") + b'"'


def poll_body(
    events: Sequence[Event],
    cursor_list: str,
    resets: Sequence[Reset] = (),
    unsubscribed: Sequence[str] = (),
) -> bytes:
    """``{"events": [...], "cursor": "...", "resets": [...]}`` from pre-encoded events;
    ``"unsubscribed": [...]`` names channels the server ended (POST /api/unsubscribe)."""
    parts = [b'{"events":[', b",".join(event.as_json() for event in events), b'],"cursor":"']
    parts.append(cursor_list.encode("ascii"))
    parts.append(b'"')
    if resets:
        parts.append(b',"resets":[')
        parts.append(b",".join(reset.as_json() for reset in resets))
        parts.append(b"]")
    if unsubscribed:
        parts.append(b',"unsubscribed":')
        parts.append(orjson.dumps(list(unsubscribed)))
    parts.append(b"}")
    return b"".join(parts)
