"""Publishing from Python code: ``tidings.publish`` and its async twin ``publish_async``."""

from __future__ import annotations

from typing import Any

import httpx

from tidings.exceptions import ClientError, ServerRejected

DEFAULT_URL = "http://127.0.0.1:8000"


def _request(
    channel: str, data: Any, event: str | None, idempotency_key: str | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"channel": channel, "data": data}
    if event is not None:
        body["event"] = event
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return body


def _headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _result(response: httpx.Response) -> str:
    """The stored event's cursor, or ServerRejected with the server's own words."""
    try:
        body = response.json()
    except ValueError:
        raise ServerRejected(
            response.status_code, "invalid_response", response.text[:200]
        ) from None
    if response.status_code != 200:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        raise ServerRejected(
            response.status_code, str(error.get("code", "unknown")), str(error.get("message", ""))
        )
    return str(body["id"])


def publish(
    channel: str,
    data: Any,
    *,
    event: str | None = None,
    idempotency_key: str | None = None,
    url: str = DEFAULT_URL,
    api_key: str | None = None,
    timeout: float = 10.0,
) -> str:
    """Publish one event and return its cursor (``"k3x9.42"``) once the server stored it."""
    try:
        response = httpx.post(
            url.rstrip("/") + "/api/publish",
            json=_request(channel, data, event, idempotency_key),
            headers=_headers(api_key),
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
    timeout: float = 10.0,
) -> str:
    """The async twin of :func:`publish`."""
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.post(
                url.rstrip("/") + "/api/publish",
                json=_request(channel, data, event, idempotency_key),
                headers=_headers(api_key),
            )
    except httpx.HTTPError as error:
        raise ClientError(f"could not reach {url}: {error}") from error
    return _result(response)
