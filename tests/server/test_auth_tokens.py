"""Verifying connection tokens (docs/protocol.md section 3): the JWT attacks, keys and the cache."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.server.tokens import (
    SECRET,
    ec_key,
    forge,
    mint,
    public_pem,
    rsa_key,
    write_public_key,
)
from tidings.config import AuthSettings
from tidings.exceptions import ConfigError, Unauthorized
from tidings.protocol.identity import Identity
from tidings.server.core import access as auth
from tidings.server.core.access import TokenVerifier


def hs256() -> TokenVerifier:
    verifier = TokenVerifier.from_settings(AuthSettings(token_secret=SECRET))
    assert verifier is not None and verifier.algorithm == "HS256"
    return verifier


def refused(verifier: TokenVerifier, token: str) -> str:
    """Verify ``token``, expect a 401, and return its message (which never holds the token)."""
    with pytest.raises(Unauthorized) as error:
        verifier.verify(token)
    assert error.value.status == 401 and error.value.code == "unauthorized"
    message = error.value.message
    assert message and (not token or token not in message)
    return message


def test_a_good_token_becomes_an_identity() -> None:
    exp = int(time.time()) + 60
    token = mint(
        None, exp=exp, sub="u1", info={"name": "Ann"}, channels=["chat:*"], publish=["chat:a"]
    )
    assert hs256().verify(token) == Identity(
        sub="u1", info={"name": "Ann"}, channels=("chat:*",), publish=("chat:a",), expires_at=exp
    )


def test_no_tokens_configured_means_no_verifier() -> None:
    assert TokenVerifier.from_settings(AuthSettings()) is None


# --- the attacks ------------------------------------------------------------------------------


def test_alg_none_is_refused() -> None:
    token = forge({"alg": "none", "typ": "JWT"}, {"sub": "u", "exp": int(time.time()) + 60})
    assert "algorithm" in refused(hs256(), token)


def test_another_algorithm_with_the_same_secret_is_refused() -> None:
    token = mint(algorithm="HS384", sub="u")
    assert "HS256" in refused(hs256(), token)


def test_a_bad_signature_is_refused() -> None:
    token = mint(key="another secret that is at least thirty-two bytes", sub="u")
    assert "signature" in refused(hs256(), token)


def test_a_tampered_payload_is_refused() -> None:
    header, _, signature = mint(sub="u", channels=["a"]).split(".")
    payload = forge({"alg": "HS256"}, {"sub": "u", "channels": ["*"], "exp": 2**40}).split(".")[1]
    assert "signature" in refused(hs256(), f"{header}.{payload}.{signature}")


def test_an_expired_token_is_refused() -> None:
    assert "expired" in refused(hs256(), mint(lifetime=-5, sub="u"))


def test_a_token_not_valid_yet_is_refused() -> None:
    token = mint(sub="u", nbf=int(time.time()) + 60)
    assert "nbf" in refused(hs256(), token)


def test_a_token_without_exp_is_refused() -> None:
    assert "exp" in refused(hs256(), mint(lifetime=None, sub="u"))


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b.c", "a.b", "....", "é.é.é", "eyJhbGciOiJIUzI1NiJ9.e30", "x" * 5000],
)
def test_a_malformed_token_is_refused(token: str) -> None:
    assert "JWT" in refused(hs256(), token)


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 5},
        {"sub": None, "channels": "chat:*"},
        {"channels": ["chat:*", 5]},
        {"channels": ["chat lobby"]},
        {"channels": ["chat:*:x*"]},
        {"publish": {"chat:*": True}},
        {"publish": [None]},
        {"exp": "soon"},
    ],
)
def test_a_claim_of_the_wrong_type_is_refused(claims: dict[str, Any]) -> None:
    claims = {key: value for key, value in claims.items() if value is not None}
    refused(hs256(), mint(**claims))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=8,
)
VERIFIER = hs256()


@settings(max_examples=300)
@given(st.text(max_size=200) | st.from_regex(r"[A-Za-z0-9_\-]{0,40}(\.[A-Za-z0-9_\-=]{0,40}){2}"))
def test_any_text_is_an_identity_or_a_401(token: str) -> None:
    try:
        VERIFIER.verify(token)
    except Unauthorized as error:
        assert error.message and (len(token) < 8 or token not in error.message)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from(["sub", "info", "channels", "publish", "nbf"]), JSON))
def test_any_signed_claims_are_an_identity_or_a_401(claims: dict[str, Any]) -> None:
    token = mint(**claims)
    try:
        identity = VERIFIER.verify(token)
    except Unauthorized:
        return
    assert identity.sub == claims.get("sub")
    assert all(isinstance(pattern, str) for pattern in identity.channels + identity.publish)


def test_a_token_for_another_audience_is_refused() -> None:
    assert "aud" in refused(hs256(), mint(sub="u", aud="another-service"))


# --- keys ------------------------------------------------------------------------------------


def test_rs256_from_an_rsa_public_key(tmp_path: Path) -> None:
    private = rsa_key()
    verifier = TokenVerifier.from_settings(
        AuthSettings(token_public_key_file=str(write_public_key(tmp_path, private)))
    )
    assert verifier is not None and verifier.algorithm == "RS256"
    assert verifier.verify(mint(key=private, algorithm="RS256", sub="u")).sub == "u"
    assert "signature" in refused(verifier, mint(key=rsa_key(), algorithm="RS256", sub="u"))
    assert "RS256" in refused(verifier, mint(key=private, algorithm="PS256", sub="u"))


def test_hs256_signed_with_the_public_key_text_is_refused(tmp_path: Path) -> None:
    """The key confusion attack: the public key is public, so HS256 with it proves nothing."""
    private = rsa_key()
    verifier = TokenVerifier.from_settings(
        AuthSettings(token_public_key_file=str(write_public_key(tmp_path, private)))
    )
    assert verifier is not None
    claims = {"sub": "attacker", "channels": ["*"], "exp": int(time.time()) + 60}
    token = forge({"alg": "HS256", "typ": "JWT"}, claims, public_pem(private))
    assert "RS256" in refused(verifier, token)


def test_es256_from_an_ec_p256_public_key(tmp_path: Path) -> None:
    private = ec_key()
    verifier = TokenVerifier.from_settings(
        AuthSettings(token_public_key_file=str(write_public_key(tmp_path, private)))
    )
    assert verifier is not None and verifier.algorithm == "ES256"
    assert verifier.verify(mint(key=private, algorithm="ES256", sub="u")).sub == "u"
    assert "signature" in refused(verifier, mint(key=ec_key(), algorithm="ES256", sub="u"))
    assert "ES256" in refused(verifier, mint(key=rsa_key(), algorithm="RS256", sub="u"))


def _private_pem(tmp_path: Path) -> Path:
    path = tmp_path / "private.pem"
    path.write_bytes(
        rsa_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


def _garbage(tmp_path: Path) -> Path:
    path = tmp_path / "garbage.pem"
    path.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    return path


@pytest.mark.parametrize(
    ("make_file", "says"),
    [
        (lambda d: d / "missing.pem", "cannot read"),
        (lambda d: d, "cannot read"),  # a directory
        (_garbage, "PEM public key"),
        (_private_pem, "PEM public key"),
        (lambda d: write_public_key(d, rsa_key(1024)), "2048"),
        (lambda d: write_public_key(d, ec_key(ec.SECP384R1())), "P-256"),
        (lambda d: write_public_key(d, ed25519.Ed25519PrivateKey.generate()), "RSA"),
    ],
)
def test_a_bad_key_file_stops_start_up(tmp_path: Path, make_file: Any, says: str) -> None:
    path = make_file(tmp_path)
    with pytest.raises(ConfigError) as error:
        TokenVerifier.from_settings(AuthSettings(token_public_key_file=str(path)))
    assert error.value.key == "auth.token_public_key_file"
    assert says in str(error.value)


def test_a_short_secret_stops_start_up() -> None:
    with pytest.raises(ConfigError) as error:
        TokenVerifier.from_settings(AuthSettings(token_secret="s3cret"))
    assert error.value.key == "auth.token_secret"


# --- the cache -----------------------------------------------------------------------------


def test_a_kept_token_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    decode = jwt.decode

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return decode(*args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting)  # PyJWT is imported where used
    verifier, token = hs256(), mint(sub="u")
    for _ in range(5):
        assert verifier.verify(token).sub == "u"
    assert len(calls) == 1


def test_a_kept_token_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = hs256()
    token = mint(lifetime=30, sub="u")
    assert verifier.verify(token).sub == "u"
    now = time.time()
    monkeypatch.setattr(auth.time, "time", lambda: now + 31)
    assert "expired" in refused(verifier, token)


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "TOKENS_KEPT", 3)
    verifier = hs256()
    tokens = [mint(sub=f"u{n}") for n in range(10)]
    for token in tokens:
        verifier.verify(token)
    assert list(verifier._kept) == tokens[-3:]
