"""Plain HTTP/1.1 request heads, read in one call (``_heads.c``)."""

def read_head(
    data: bytes, start: int, /
) -> tuple[str, bytes, list[tuple[bytes, bytes]], int] | None:
    """The plain request head at ``data[start:]``: its method, target, headers and the
    offset after it; None for httptools to read."""
