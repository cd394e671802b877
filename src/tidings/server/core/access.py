"""Connection tokens (docs/protocol.md section 3): who is asking, and what they may follow.

One algorithm is accepted, fixed by the configuration: HS256 with ``auth.token_secret``, or
RS256/ES256 following the type of the PEM public key in ``auth.token_public_key_file``. A
token whose header names any other algorithm (``none``, or HS256 signed with the text of
the public key, the classic key confusion) is refused before its signature is checked.

A verified token is kept (keyed by its text, bounded) until it expires: a long poller sends
the same token with every request, and checking a signature costs far more than a poll.
Every verification, of a kept token too, asks the node's revocations (``POST
/api/disconnect`` without reconnect) whether the token's sub is refused; a token that lives
longer than ``auth.max_token_seconds`` is refused, so that a revocation that lasts that long
outlives every token it refuses. Tokens are secrets: no message or log line here ever
includes one.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mypy_extensions import mypyc_attr

from tidings.config import AuthSettings, Settings
from tidings.exceptions import ConfigError, Forbidden, Unauthorized
from tidings.protocol.channel import namespace_of
from tidings.protocol.identity import ANONYMOUS, Identity, identity_from_claims
from tidings.server.core.revocations import Revocations

if TYPE_CHECKING:
    import jwt

    from tidings.server.core.request import Request

TOKENS_KEPT = 10_000
MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as the hash
MIN_RSA_BITS = 2048
EXPIRED = "the token has expired: fetch a new token and reconnect"
REVOKED = "the server revoked this user's tokens: fetch a token issued after the revocation"
HOW_TO_SEND = "send it as Authorization: Bearer <jwt> or ?token=<jwt>"
DECODE_OPTIONS: Any = {
    "require": ["exp"],
    "verify_iat": False,  # informative only: a token minted a second "early" is still good
    "enforce_minimum_key_length": True,
}


# an ordinary class once compiled: the suite stands in for verify() to show a failing verifier
@mypyc_attr(native_class=False)
class TokenVerifier:
    """Checks connection tokens against the one configured key and algorithm."""

    __slots__ = ("_kept", "_key", "algorithm", "max_seconds", "revocations")

    def __init__(self, algorithm: str, key: Any, max_seconds: float = 86400.0) -> None:
        self.algorithm = algorithm
        self._key = key
        self._kept: dict[str, Identity] = {}
        self.max_seconds = max_seconds
        self.revocations = Revocations()

    @classmethod
    def from_settings(cls, auth: AuthSettings) -> TokenVerifier | None:
        verifier = cls._from_key_settings(auth)
        if verifier is not None:
            verifier.max_seconds = auth.max_token_seconds
        return verifier

    @classmethod
    def _from_key_settings(cls, auth: AuthSettings) -> TokenVerifier | None:
        """The verifier the settings ask for, or None when tokens are not configured."""
        if auth.token_secret:
            if len(auth.token_secret.encode()) < MIN_SECRET_BYTES:
                raise ConfigError(
                    "auth.token_secret",
                    f"must be at least {MIN_SECRET_BYTES} bytes for HS256; make one with "
                    "python -c 'import secrets; print(secrets.token_urlsafe(32))'",
                )
            return cls("HS256", auth.token_secret)
        if auth.token_public_key_file:
            return cls(*_public_key(auth.token_public_key_file))
        return None

    def verify(self, token: str) -> Identity:
        """The token's Identity; Unauthorized (401) with a reason a person can act on."""
        identity = self._kept.get(token)
        if identity is None:
            identity = self._decode(token)
            if len(self._kept) >= TOKENS_KEPT:
                del self._kept[next(iter(self._kept))]  # the oldest entry
            self._kept[token] = identity
        elif identity.expires_at is not None and identity.expires_at <= time.time():
            del self._kept[token]
            raise Unauthorized(EXPIRED)
        revocations = self.revocations
        if revocations.by_sub and revocations.refuses(identity):  # a poll's hot path
            raise Unauthorized(REVOKED)
        return identity

    def forget(self, sub: str) -> None:
        """Drop the kept tokens of ``sub`` (it was revoked): they are verified afresh."""
        for token, identity in list(self._kept.items()):
            if identity.sub == sub:
                del self._kept[token]

    def _decode(self, token: str) -> Identity:
        import jwt  # here, not at the top: a node without tokens never loads PyJWT (9 MB a process)

        try:
            claims = jwt.decode(
                token, self._key, algorithms=[self.algorithm], options=DECODE_OPTIONS
            )
        except jwt.PyJWTError as error:
            raise Unauthorized(self._reason(error)) from None
        except (ValueError, TypeError):
            raise Unauthorized(self._reason(jwt.DecodeError())) from None
        identity = identity_from_claims(claims)
        assert identity.expires_at is not None  # exp is required
        if identity.expires_at - time.time() > self.max_seconds:
            raise Unauthorized(
                f"the token lives longer than this server accepts ({self.max_seconds:g} s,"
                " auth.max_token_seconds): issue tokens that expire sooner"
            )
        return identity

    def _reason(self, error: jwt.PyJWTError) -> str:
        """Why a token was refused, in words; never the token or PyJWT's text about it."""
        import jwt

        if isinstance(error, jwt.ExpiredSignatureError):
            return EXPIRED
        if isinstance(error, jwt.ImmatureSignatureError):
            return "the token is not valid yet (nbf is in the future): check the issuer's clock"
        if isinstance(error, jwt.MissingRequiredClaimError):
            return f"the token has no {error.claim} claim: connection tokens must expire"
        if isinstance(error, jwt.InvalidAlgorithmError):
            return f"the token's algorithm is not accepted: this server takes {self.algorithm}"
        if isinstance(error, jwt.InvalidSignatureError):
            return "the token's signature does not match this server's key"
        if isinstance(error, jwt.InvalidAudienceError):
            return "the token names an audience (aud): this server accepts tokens without one"
        if isinstance(error, jwt.exceptions.InvalidSubjectError):
            return "the token's sub claim must be a string"
        return "the token is not a well-formed JWT (header.payload.signature)"


def _public_key(path: str) -> tuple[str, Any]:
    """Load the PEM public key; its type decides the algorithm (RSA: RS256, EC P-256: ES256)."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    key_name = "auth.token_public_key_file"
    try:
        key = load_pem_public_key(Path(path).read_bytes())
    except OSError as error:
        raise ConfigError(key_name, f"cannot read {path!r}: {error.strerror}") from None
    except (ValueError, TypeError):
        raise ConfigError(key_name, f"{path!r} does not hold a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigError(key_name, f"the RSA key must have at least {MIN_RSA_BITS} bits")
        return "RS256", key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise ConfigError(key_name, "ES256 needs an EC key on the P-256 curve")
        return "ES256", key
    raise ConfigError(key_name, "the key must be an RSA (RS256) or EC P-256 (ES256) public key")


# --- who is asking ---------------------------------------------------------------------------


def bearer(request: Request) -> str | None:
    """The value of ``Authorization: Bearer <value>``; other schemes are not ours to read."""
    header = request.header(b"authorization")
    if header is None:
        return None
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    return value if scheme.lower() == "bearer" and value else None


def subscriber(
    tokens: TokenVerifier | None,
    settings: Settings,
    request: Request,
    query_token: str | None,
    channels: Sequence[str],
    hooks_on: bool = False,
) -> tuple[str, ...]:
    """Check the request may follow every one of ``channels``; the ones its application
    hooks must decide (namespaces with ``hooks = true`` that no token allows).

    ``hooks_on``: some namespace has hooks. Without tokens or hooks every namespace is
    public (the configuration insists), so nothing is checked.

    The request's identity is its token's, verified here (or the hook's, once a hook
    allowed it). Without tokens configured a token sent anyway cannot be checked, so it
    is not looked at.
    """
    if tokens is None and not hooks_on:
        return ()
    identity = request.identity
    if tokens is not None and not request.hooked:
        token = bearer(request) or query_token
        identity = tokens.verify(token) if token else ANONYMOUS
        request.identity = identity
    hooked = []
    for channel in channels:
        if needs_hook(settings, identity, channel):
            hooked.append(channel)
        else:
            check_subscribe(settings, identity, channel)
    return tuple(hooked)


def needs_hook(settings: Settings, identity: Identity, channel: str) -> bool:
    """Whether the application's subscribe hook must decide ``channel`` for ``identity``."""
    namespace = settings.namespace(namespace_of(channel))
    return namespace.hooks and not namespace.public and not identity.may_subscribe(channel)


def check_subscribe(settings: Settings, identity: Identity, channel: str) -> None:
    if settings.namespace(namespace_of(channel)).public:
        return
    if identity is ANONYMOUS:
        raise Unauthorized(f"channel {channel!r} needs a connection token: {HOW_TO_SEND}")
    if not identity.may_subscribe(channel):
        raise Forbidden(f"the token's channels claim does not allow {channel!r}")


def check_publish(
    tokens: TokenVerifier | None, settings: Settings, identity: Identity, channel: str
) -> None:
    """A client publishing: the namespace must allow it, and once tokens are configured,
    the token's publish claim too."""
    if not settings.namespace(namespace_of(channel)).client_publish:
        raise Forbidden(f"clients may not publish to {channel!r}")
    if tokens is None:
        return
    if identity is ANONYMOUS:
        raise Unauthorized(f"publishing to {channel!r} needs a connection token: {HOW_TO_SEND}")
    if not identity.may_publish(channel):
        raise Forbidden(f"the token's publish claim does not allow {channel!r}")


# --- who may use the API ---------------------------------------------------------------------


def authorize_api(keys: tuple[str, ...], request: Request) -> None:
    """API keys when configured (compared in constant time); otherwise loopback only."""
    if not keys:
        if not request.is_loopback():
            raise Forbidden("no API keys are configured: only loopback clients may publish")
        return
    given = bearer(request)
    if given is None:
        raise Unauthorized("send the API key as Authorization: Bearer <key>")
    if not _is_api_key(given, keys):
        raise Unauthorized("the API key is not valid")


def _is_api_key(given: str, keys: tuple[str, ...]) -> bool:
    """Compare with every key, each in constant time, so timing tells nothing about a key."""
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(given.encode(), key.encode())
    return matched


def authorize_publisher(
    tokens: TokenVerifier | None, keys: tuple[str, ...], request: Request
) -> Identity | None:
    """None for an API key (or loopback without keys): every channel. Otherwise the
    connection token's Identity, which may publish only where ``check_publish`` allows."""
    given = bearer(request)
    if (
        tokens is None
        or given is None
        or (keys and _is_api_key(given, keys))
        or (not keys and request.is_loopback())
    ):
        authorize_api(keys, request)
        return None
    if given.count(".") != 2:
        raise Unauthorized("the bearer value is neither a valid API key nor a connection token")
    return tokens.verify(given)
