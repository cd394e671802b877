"""The optional extra and the tests' own guard: clear messages when something is missing."""

from __future__ import annotations

import sys

import pytest

from tests.nats.support import free_port, require_nats
from tidings.brokers import REGISTRY, broker_for
from tidings.config import Settings
from tidings.exceptions import ConfigError


def test_nats_is_registered() -> None:
    assert "nats" in REGISTRY


def test_without_nats_py_the_scheme_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "nats", None)  # makes ``import nats`` fail
    monkeypatch.delitem(sys.modules, "tidings.brokers.nats", raising=False)
    with pytest.raises(ConfigError) as caught:
        broker_for("nats://127.0.0.1:4222", Settings())
    assert caught.value.key == "server.broker"
    assert "pip install tidings[nats]" in str(caught.value)


async def test_no_nats_is_a_loud_skip_and_under_ci_a_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"NATS IS NOT RUNNING on 127\.0\.0\.1:"):
        await require_nats(url)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="nats tests did not run"):
        await require_nats(url)
