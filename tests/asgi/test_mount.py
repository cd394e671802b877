"""The mount itself: how it starts, in-process publishing, and a host app around it.

Every protocol behaviour is proven on the mount by tests/server, whose server fixture runs
each test against both edges; these tests cover what only the mount has.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.routing import Mount

from tests.conftest import settings_with
from tidings.asgi import TidingsApp, app
from tidings.exceptions import InvalidChannel, InvalidField, TooLarge


async def test_publish_in_process_keeps_every_rule_of_the_publish_api() -> None:
    async with TidingsApp(settings_with(max_message_bytes=64)) as tidings:
        first = await tidings.publish("news", {"n": 1}, idempotency_key="k1")
        again = await tidings.publish("news", {"n": 1}, idempotency_key="k1")
        second = await tidings.publish("news", {"n": 2}, event="update")
        assert again == first
        epoch, offset = first.split(".")
        assert second == f"{epoch}.{int(offset) + 1}"
        with pytest.raises(TooLarge):
            await tidings.publish("news", "x" * 100)
        with pytest.raises(InvalidChannel):
            await tidings.publish("no spaces", 1)
        with pytest.raises(InvalidField):
            await tidings.publish("news", 1, event="tidings.reset")
        assert tidings.node is not None
        page = await tidings.node.broker.history("news", None, 10)
        assert page.cursor.offset == int(offset) + 1  # the refused ones stored nothing


def test_app_takes_a_path_or_settings_or_nothing(tmp_path: Path) -> None:
    config = tmp_path / "tidings.toml"
    config.write_text("[server]\nmax_poll_seconds = 7\n")
    assert app(config).settings.server.max_poll_seconds == 7
    assert app(settings_with(max_poll_seconds=3)).settings.server.max_poll_seconds == 3
    assert app().settings.server.max_poll_seconds == 30


@pytest.fixture
def starlette_without_lifespan() -> Iterator[tuple[str, TidingsApp]]:
    """Starlette passes no lifespan to a mounted app: the node starts on the first request."""
    tidings = TidingsApp(settings_with())
    host = Starlette(routes=[Mount("/live", app=tidings)])
    server = uvicorn.Server(uvicorn.Config(host, host="127.0.0.1", port=0, log_level="warning"))
    ready = threading.Event()
    loop = asyncio.new_event_loop()

    async def serve() -> None:
        task = asyncio.ensure_future(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        ready.set()
        await task

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), daemon=True)
    thread.start()
    assert ready.wait(20) and server.started
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/live", tidings
    asyncio.run_coroutine_threadsafe(tidings.stop(), loop).result(timeout=20)
    server.should_exit = True
    thread.join(timeout=20)
    loop.close()


def test_first_request_starts_the_node_when_no_lifespan_comes(
    starlette_without_lifespan: tuple[str, TidingsApp],
) -> None:
    url, tidings = starlette_without_lifespan
    assert tidings.node is None  # nothing started it yet
    with httpx.Client(base_url=url, timeout=10) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert tidings.node is not None
        published = client.post("/api/publish", json={"channel": "jobs", "data": {"p": 1}})
        cursor = published.json()["id"]
        polled = client.get("/poll", params={"channel": "jobs", "since": cursor, "timeout": 0})
        assert polled.json()["events"] == [] and polled.headers["Tidings-Cursor"] == cursor
        assert client.get("/nowhere").status_code == 404


async def test_the_host_app_decides_with_python_functions_instead_of_urls() -> None:
    from tidings.asgi import Allow, HookCall, HookFunctions

    asked: list[HookCall] = []

    async def subscribe(call: HookCall) -> Allow | None:
        asked.append(call)
        if dict(call.headers).get("cookie") == "sid=alice":
            return Allow("alice", {"name": "Alice"}, None)
        return None

    settings = settings_with(namespaces__room__public=False, namespaces__room__hooks=True)
    tidings = TidingsApp(settings, hooks=HookFunctions(subscribe=subscribe))
    transport = httpx.ASGITransport(app=tidings)
    async with tidings, httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        allowed = await client.get("/poll?channel=room:1", headers={"Cookie": "sid=alice"})
        denied = await client.get("/poll?channel=room:1", headers={"Cookie": "sid=eve"})
    assert allowed.status_code == 200 and denied.status_code == 403
    assert [call.channels for call in asked] == [("room:1",), ("room:1",)]
    assert asked[0].transport == "poll"


def test_a_namespace_with_hooks_but_no_subscribe_hook_stops_start_up() -> None:
    from tidings.exceptions import ConfigError
    from tidings.server.core.node import Node

    settings = settings_with(namespaces__room__public=False, namespaces__room__hooks=True)
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ConfigError, match=r"hooks\.subscribe_url"):
            Node(settings, loop)
    finally:
        loop.close()
