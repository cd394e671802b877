"""The Python client: publish from code (sync and async)."""

from tidings.client.publish import DEFAULT_URL, publish, publish_async

__all__ = ["DEFAULT_URL", "publish", "publish_async"]
