"""The guard of the deployment tests: a missing server binary is a loud skip, under CI a
failure."""

from __future__ import annotations

import pytest

from tests.deployments import require_binaries


def test_a_missing_binary_skips_loudly_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    missing = "/nonexistent/redis-server"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="NOT INSTALLED"):
        require_binaries(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="deployment tests did not run"):
        require_binaries(missing)
