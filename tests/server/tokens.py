"""Minting connection tokens for tests: HS256 with a shared secret, RS256 and ES256 keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "a test secret that is at least thirty-two bytes long"


def mint(
    lifetime: float | None = 60, key: Any = SECRET, algorithm: str = "HS256", **claims: Any
) -> str:
    """A signed token; ``lifetime=None`` leaves exp out."""
    if lifetime is not None:
        claims.setdefault("exp", int(time.time() + lifetime))
    return jwt.encode(claims, key, algorithm=algorithm)


def short_lived(**claims: Any) -> str:
    """A token that expires within one to two seconds: long enough to connect."""
    return mint(lifetime=None, exp=int(time.time()) + 2, **claims)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes = b"") -> str:
    """A token built by hand, as an attacker would: HMAC-SHA256 with ``key``, or unsigned.

    PyJWT refuses to sign HS256 with a PEM key; an attacker's own code does not.
    """
    signing_input = f"{_b64(orjson.dumps(header))}.{_b64(orjson.dumps(claims))}"
    if header["alg"] == "none":
        return signing_input + "."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def public_pem(private: Any) -> bytes:
    return bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def write_public_key(directory: Path, private: Any, name: str = "public.pem") -> Path:
    path = directory / name
    path.write_bytes(public_pem(private))
    return path
