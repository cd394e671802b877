"""Files the server ships: the browser client at ``/tidings.js``, the lab and the admin page.

Every shipped file is read once, before the node serves its first request, in a worker
thread (:meth:`StaticFiles.load`), and answered from memory with an ETag, so a browser
revalidates cheaply and no request ever waits on the disk.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from importlib import resources

from tidings.exceptions import NotFound
from tidings.server.core.exchange import Exchange
from tidings.server.core.node import Node
from tidings.server.core.request import Request

CONTENT_TYPES = {
    ".js": b"text/javascript; charset=utf-8",
    ".html": b"text/html; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
}
SHIPPED = ("tidings.js", "lab.html", "admin.html")


@dataclass(frozen=True, slots=True)
class StaticFile:
    body: bytes
    content_type: bytes
    etag: bytes


class StaticFiles:
    """The shipped files, in memory."""

    __slots__ = ("_files",)

    def __init__(self, files: dict[str, StaticFile]) -> None:
        self._files = files

    @classmethod
    async def load(cls) -> StaticFiles:
        """Read every shipped file off the event loop."""
        return cls(await asyncio.to_thread(_read_all))

    def get(self, name: str) -> StaticFile:
        file = self._files.get(name)
        if file is None:
            raise NotFound(f"{name} is not part of this installation")
        return file

    def serve(self, exchange: Exchange, request: Request, name: str) -> None:
        file = self.get(name)
        etag = b'"' + file.etag + b'"'
        headers = [(b"ETag", etag), (b"Cache-Control", b"no-cache")]
        if request.raw_header(b"if-none-match") == etag:
            exchange.respond(304, b"", headers)
        else:
            exchange.respond(200, file.body, headers, file.content_type)


def _read_all() -> dict[str, StaticFile]:
    files = {}
    for name in SHIPPED:
        try:
            body = resources.files("tidings").joinpath("static", name).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            continue  # answered 404, naming the file, if it is ever asked for
        suffix = name[name.rfind(".") :]
        digest = hashlib.sha256(body).hexdigest()[:16].encode()
        content_type = CONTENT_TYPES.get(suffix, b"application/octet-stream")
        files[name] = StaticFile(body, content_type, digest)
    return files


def handle_client_script(
    files: StaticFiles, node: Node, exchange: Exchange, request: Request
) -> None:
    files.serve(exchange, request, "tidings.js")


def handle_lab(files: StaticFiles, node: Node, exchange: Exchange, request: Request) -> None:
    """The transport lab: one page comparing the four techniques live (``server.lab``)."""
    if not node.settings.server.lab:
        raise NotFound("the transport lab is off on this server (server.lab = false)")
    files.serve(exchange, request, "lab.html")
