from __future__ import annotations

import httpx

from tests.conftest import RunningServer


def test_health_and_publish_roundtrip(server: RunningServer) -> None:
    assert httpx.get(server.url + "/healthz").status_code == 200
    first = httpx.post(server.url + "/api/publish", json={"channel": "news", "data": 1}).json()
    second = httpx.post(server.url + "/api/publish", json={"channel": "news", "data": 2}).json()
    epoch, offset = first["id"].split(".")
    assert second["id"] == f"{epoch}.{int(offset) + 1}"
