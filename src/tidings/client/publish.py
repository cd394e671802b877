"""Publishing from Python code: ``tidings.publish`` and its async twin ``publish_async``.

``POST /api/publish`` (docs/protocol.md section 2). The connected client
(:mod:`tidings.client.client`) publishes through :func:`post_publish` too when it has no
WebSocket to publish over.
"""

from __future__ import annotations

from typing import Any

import httpx

from tidings.client.answers import error_of
from tidings.exceptions import ClientError, ServerRejected

__all__ = ["DEFAULT_URL", "credential", "post_publish", "publish", "publish_async", "publish_body"]

DEFAULT_URL = "http://127.0.0.1:8000"


def publish_body(
    channel: str, data: Any, event: str | None, idempotency_key: str | None
) -> dict[str, Any]:
    """The publish object of docs/protocol.md section 2 (also the WebSocket ``publish`` op)."""
    body: dict[str, Any] = {"channel": channel, "data": data}
    if event is not None:
        body["event"] = event
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return body


def bearer(credential: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"} if credential else {}


def credential(api_key: str | None, token: str | None) -> dict[str, str]:
    """The one ``Authorization`` header a publish carries: an API key or a token, not both."""
    if api_key and token:
        raise ClientError("give api_key or token, not both: a request carries one of them")
    return bearer(api_key or token)


def _result(response: httpx.Response) -> str:
    """The stored event's cursor, or ServerRejected with the server's own words."""
    if response.status_code != 200:
        error = error_of(response.content) or ("unknown", response.text[:200])
        raise ServerRejected(response.status_code, *error)
    try:
        return str(response.json()["id"])
    except (ValueError, KeyError, TypeError):
        raise ServerRejected(
            response.status_code, "invalid_response", response.text[:200]
        ) from None


async def post_publish(
    http: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> str:
    """``POST /api/publish`` with an open HTTP client; the cursor of the stored event."""
    try:
        response = await http.post(url.rstrip("/") + "/api/publish", json=body, headers=headers)
    except httpx.HTTPError as error:
        raise ClientError(f"could not reach {url}: {error}") from error
    return _result(response)


def publish(
    channel: str,
    data: Any,
    *,
    event: str | None = None,
    idempotency_key: str | None = None,
    url: str = DEFAULT_URL,
    api_key: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> str:
    """Publish one event and return its cursor (``"k3x9.42"``) once the server stored it.

    Presents ``api_key`` or a connection ``token`` (a JWT whose ``publish`` claim allows the
    channel, in a namespace with ``client_publish``) as ``Authorization: Bearer``.
    """
    try:
        response = httpx.post(
            url.rstrip("/") + "/api/publish",
            json=publish_body(channel, data, event, idempotency_key),
            headers=credential(api_key, token),
            timeout=timeout,
        )
    except httpx.HTTPError as error:
        raise ClientError(f"could not reach {url}: {error}") from error
    return _result(response)


async def publish_async(
    channel: str,
    data: Any,
    *,
    event: str | None = None,
    idempotency_key: str | None = None,
    url: str = DEFAULT_URL,
    api_key: str | None = None,
    token: str | None = None,
    timeout: float = 10.0,
) -> str:
    """The async twin of :func:`publish`."""
    body = publish_body(channel, data, event, idempotency_key)
    headers = credential(api_key, token)
    async with httpx.AsyncClient(timeout=timeout) as http:
        return await post_publish(http, url, body, headers)
