"""The ``channels`` bench target: Django Channels with its in-memory channel layer.

A one-file Django project as Channels' tutorial builds it: ``ProtocolTypeRouter`` sends HTTP
to Django and WebSocket to a ``URLRouter`` whose ``AsyncWebsocketConsumer`` joins the group of
the channel in its URL (``/ws/<channel>/``); an async Django view (``POST /api/publish``)
calls ``channel_layer.group_send``, and the consumer's handler sends the event as a text frame.
The channel layer is ``channels.layers.InMemoryChannelLayer`` (one process; Channels' docs
recommend it for testing and local development, and ``channels_redis`` across processes). No
authentication middleware, as the bench has no users. WebSocket only, and it keeps no history:
a client that reconnects gets nothing it missed, and there is nothing to poll.
"""

from __future__ import annotations

import json
from typing import Any

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="bench-only-not-secret",
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=["channels"],
    MIDDLEWARE=[],
    DATABASES={},
    CHANNEL_LAYERS={"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}},
)
django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # noqa: E402
from channels.layers import get_channel_layer  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

django_asgi_app = get_asgi_application()


class EventsConsumer(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        self.group = self.scope["url_route"]["kwargs"]["channel"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def bench_event(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


async def publish(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return HttpResponse(status=405)
    body = json.loads(request.body)
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(
        body["channel"],
        {"type": "bench.event", "text": json.dumps(body["data"], separators=(",", ":"))},
    )
    return JsonResponse({"channel": body["channel"]})


async def healthz(request: HttpRequest) -> HttpResponse:
    return HttpResponse("ok\n", content_type="text/plain")


urlpatterns = [path("api/publish", publish), path("healthz", healthz)]

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": URLRouter([path("ws/<str:channel>/", EventsConsumer.as_asgi())]),
    }
)
