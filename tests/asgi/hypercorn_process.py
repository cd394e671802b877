"""Hypercorn in a subprocess serving ``tests.asgi.hypercorn_host``, with or without TLS.

With ``--certfile``/``--keyfile`` hypercorn offers ``h2`` and ``http/1.1`` by ALPN, so a
browser speaks HTTP/2 to it; without them it speaks HTTP/1.1. The certificate is made at
test time for 127.0.0.1, self-signed, in a temporary directory.
"""

from __future__ import annotations

import datetime
import importlib.util
import ipaddress
import os
import re
import ssl
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.asgi.hypercorn_host import PREFIX
from tests.deployments import wait_until
from tests.serve_process import ServeProcess

ROOT = Path(__file__).resolve().parents[2]
HOST_APP = "tests.asgi.hypercorn_host:app"
# Short server-side delays keep the stop fast: the drain window, and hypercorn's own wait.
FAST_ENV = {"TIDINGS_SERVER_DRAIN_SECONDS": "0.2", "TIDINGS_SERVER_SSE_RETRY_MS": "200"}


def require_hypercorn() -> None:
    if importlib.util.find_spec("hypercorn") is not None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("hypercorn is missing: CI must run the hypercorn tests (the test extras)")
    pytest.skip("HYPERCORN IS MISSING: the mount was not tried under hypercorn")


def open_connections(metrics: str, transport: str) -> float:
    """The node's ``tidings_connections{transport=...}`` gauge, from ``/metrics``."""
    found = re.search(rf'^tidings_connections{{transport="{transport}"}} (\S+)$', metrics, re.M)
    return float(found[1]) if found else 0.0


@dataclass(frozen=True, slots=True)
class Certificate:
    certfile: Path
    keyfile: Path


def self_signed(directory: Path) -> Certificate:
    """A one-day certificate for the IP address 127.0.0.1, signed by its own key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    made = Certificate(directory / "cert.pem", directory / "key.pem")
    made.certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    made.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return made


class HypercornProcess(ServeProcess):
    """``hypercorn --bind 127.0.0.1:0 tests.asgi.hypercorn_host:app``, TLS if given a
    certificate; stopped by its PID like ``tidings serve``."""

    listening = re.compile(r"Running on https?://127\.0\.0\.1:(\d+)")

    def __init__(
        self, certificate: Certificate | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.certificate = certificate
        self.scheme = "http" if certificate is None else "https"
        flags = ["--graceful-timeout", "2"]
        if certificate is not None:
            flags += ["--certfile", str(certificate.certfile)]
            flags += ["--keyfile", str(certificate.keyfile)]
        env = {**FAST_ENV, **(env or {}), "PYTHONPATH": str(ROOT)}
        super().__init__(*flags, env=env, command=[sys.executable, "-m", "hypercorn"])
        self.wait_listening()

    def argv(self, command: list[str], flags: tuple[str, ...]) -> list[str]:
        return [*command, "--bind", "127.0.0.1:0", *flags, HOST_APP]

    def client(self) -> httpx.Client:
        """An HTTP/1.1 client for the mount that trusts the server's certificate."""
        verify: ssl.SSLContext | bool = False
        if self.certificate is not None:
            verify = ssl.create_default_context(cafile=self.certificate.certfile)
        return httpx.Client(base_url=self.url, verify=verify, trust_env=False, timeout=10)

    def connections(self, transport: str) -> float:
        with self.client() as http:
            return open_connections(http.get("/metrics").text, transport)

    def wait_for_connections(self, transport: str, count: int) -> None:
        wait_until(lambda: self.connections(transport) == count, f"{count} {transport}", 10)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The mount's URL, as ``server.url`` in the server tests."""
        return f"{self.origin}{PREFIX}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{PREFIX}/ws"
