"""tidings.js against the mount inside a FastAPI app, signed in by the app's own session
cookie: no token anywhere, on each of the four techniques."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from http.cookies import SimpleCookie

import pytest
from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse
from playwright.sync_api import Page

from tests.asgi_server import serve_in_thread
from tests.conftest import RunningServer, settings_with
from tidings.asgi import Allow, HookCall, HookFunctions, TidingsApp

PAGE = """<!doctype html><meta charset="utf-8"><title>inbox</title>
<script type="module">
import { Tidings } from "/rt/tidings.js";
window.receive = (transport, channel) => new Promise((resolve) => {
  const client = new Tidings("/rt", { transports: [transport], interval: 200, minDelay: 100 });
  const done = (outcome) => {
    clearTimeout(limit);
    clearInterval(sending);
    client.close();
    resolve(outcome);
  };
  const limit = setTimeout(() => done({ timeout: client.transport, state: client.state }), 30000);
  client.on("error", (error) => done({ error: error.code }));
  client.subscribe(channel, {
    onEvent: (event) => done({ data: event.data, transport: client.transport }),
    onError: (error) => done({ error: error.code }),
  });
  // the server follows the channel once the hook has answered: publish until it arrives
  let sending;
  client.on("connected", () => {
    const send = () => fetch("/send?channel=" + channel, { method: "POST" });
    send();
    sending = sending || setInterval(send, 500);
  });
});
window.ready = true;
</script>"""


def host(sessions: dict[str, str]) -> tuple[FastAPI, TidingsApp]:
    async def may_subscribe(call: HookCall) -> Allow | None:
        morsel = SimpleCookie(dict(call.headers).get("cookie", "")).get("sid")
        user = sessions.get(morsel.value) if morsel is not None else None
        if user is not None and call.channels == (f"inbox:{user}",):
            return Allow(sub=user, info={"name": user.title()})
        return None

    settings = settings_with(
        namespaces__inbox__public=False, namespaces__inbox__hooks=True, sse_retry_ms=200
    )
    realtime = TidingsApp(settings, hooks=HookFunctions(subscribe=may_subscribe))
    app = FastAPI(lifespan=realtime.lifespan)

    @app.get("/")
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.post("/login")
    async def login(user: str, response: Response) -> dict[str, str]:
        sid = secrets.token_urlsafe(16)
        sessions[sid] = user
        response.set_cookie("sid", sid, httponly=True, samesite="strict")
        return {"user": user}

    @app.post("/send")
    async def send(channel: str) -> dict[str, str]:
        return {"id": await realtime.publish(channel, {"hello": channel})}

    app.mount("/rt", realtime)
    return app, realtime


@pytest.fixture
def inbox_app() -> Iterator[RunningServer]:
    app, realtime = host({})
    running = serve_in_thread(app, realtime)
    yield running
    running.stop()


@pytest.mark.parametrize("transport", ["websocket", "sse", "long_poll", "poll"])
def test_a_signed_in_page_follows_its_private_channel_with_the_session_cookie(
    page: Page, inbox_app: RunningServer, transport: str
) -> None:
    origin = inbox_app.url.removesuffix("/rt")
    page.goto(origin + "/")
    page.wait_for_function("window.ready === true")
    page.evaluate("() => fetch('/login?user=alice', { method: 'POST' })")
    outcome = page.evaluate("([t, c]) => receive(t, c)", [transport, "inbox:alice"])
    assert outcome == {"data": {"hello": "inbox:alice"}, "transport": transport}
    refused = page.evaluate("([t, c]) => receive(t, c)", [transport, "inbox:bob"])
    assert refused == {"error": "forbidden"}
