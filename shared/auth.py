"""JWT checks: who is calling, as a user or as a service acting for a user.

Algorithms come from an allow-list built from the configured keys (HS256 with `JWT_SECRET`, RS256 with
`JWT_PUBLIC_KEY` or `JWT_JWKS_URL`); the token's header only picks among them, so an RS256 public key
is never used as an HMAC secret. `exp` and `sub` are required; `iss`/`aud` are checked when configured.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import jwt
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from flask import Flask, current_app, g, request

from shared.errors import Forbidden, Unauthorized

SERVICE_TYPE = "service"
USER_HEADER = "X-User-Id"
MAX_TOKEN_CHARS = 8192  # far above any real token; a bigger one is refused before it is decoded
HEADER_CACHE_SIZE = 4096  # tokens whose alg is remembered: ~1.5 MB of real tokens, 32 MiB at most
_USER_ID = re.compile(r"[A-Za-z0-9_.@:-]{1,64}")


class TokenVerifier:
    """Verifies bearer tokens against the configured keys; one per app."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        secret = config.get("JWT_SECRET") or None
        public_key = config.get("JWT_PUBLIC_KEY") or None
        jwks_url = config.get("JWT_JWKS_URL") or None
        # Without any key every token is refused; a serving app never gets here so (Config.require_serving).
        self._keys: dict[str, Any] = {}
        if secret:
            self._keys["HS256"] = secret
        if public_key:
            self._keys["RS256"] = load_pem_public_key(_pem(public_key).encode())
        self._jwks = (
            jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)
            if jwks_url and not public_key
            else None
        )
        if self._jwks:
            self._keys["RS256"] = None  # looked up by `kid` per token
        self.issuer = config.get("JWT_ISSUER") or None
        self.audience = config.get("JWT_AUDIENCE") or None
        self.leeway = int(config.get("JWT_LEEWAY_SECONDS", 30))

    @property
    def algorithms(self) -> list[str]:
        return sorted(self._keys)

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or `Unauthorized` saying what is wrong with it."""
        alg = _unverified_alg(token)
        if alg not in self._keys:
            raise Unauthorized("token algorithm not allowed")
        required = ["exp", "sub"]
        required += ["iss"] if self.issuer else []
        required += ["aud"] if self.audience else []
        try:
            claims = jwt.decode(
                token,
                self._key_for(alg, token),
                algorithms=[alg],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.leeway,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.PyJWTError as error:
            raise Unauthorized(f"invalid token: {error}") from None
        if not _USER_ID.fullmatch(str(claims["sub"])):
            raise Unauthorized("invalid token: malformed sub")
        return claims

    def _key_for(self, alg: str, token: str) -> Any:
        if alg == "RS256" and self._jwks is not None:
            try:
                return self._jwks.get_signing_key_from_jwt(token).key
            except jwt.PyJWKClientError as error:
                raise Unauthorized(f"invalid token: {error}") from None
        return self._keys[alg]


@functools.lru_cache(maxsize=HEADER_CACHE_SIZE)
def _unverified_alg(token: str) -> str:
    """The `alg` a token's JOSE header names, checked for shape first: the header is the client's, so it
    may be anything (`alg` a list or an object, `kid` a number, a header that is not an object).

    Cached by token: a client sends the same token on every request, and `jwt.decode` parses the header
    again anyway, so a known token's header is read once per request, not twice. Only what the header
    says is cached (a refusal raises and is not); the signature and claims are checked every time."""
    if len(token) > MAX_TOKEN_CHARS:
        raise Unauthorized("malformed token: too long")
    try:
        header = jwt.get_unverified_header(token)
    except (jwt.PyJWTError, ValueError, TypeError, RecursionError):
        raise Unauthorized("malformed token") from None
    if not isinstance(header, dict) or not isinstance(header.get("alg"), str):
        raise Unauthorized("malformed token: the header's alg must be a string")
    if not isinstance(header.get("kid", ""), str):
        raise Unauthorized("malformed token: the header's kid must be a string")
    return header["alg"]


def _pem(value: str) -> str:
    """PEM text from an environment variable, where newlines often arrive as literal `\\n`."""
    return value.replace("\\n", "\n").strip()


def mint_token(
    subject: str, *, service: bool = False, ttl_seconds: int = 3600, config: Mapping | None = None
) -> str:
    """A token signed with this deployment's key (JWT_SECRET, else JWT_PRIVATE_KEY for RS256)."""
    config = config if config is not None else current_app.config
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "exp": now + ttl_seconds}
    if service:
        claims["typ"] = SERVICE_TYPE
    if config.get("JWT_ISSUER"):
        claims["iss"] = config["JWT_ISSUER"]
    if config.get("JWT_AUDIENCE"):
        claims["aud"] = config["JWT_AUDIENCE"]
    if config.get("JWT_SECRET"):
        return jwt.encode(claims, config["JWT_SECRET"], algorithm="HS256")
    if config.get("JWT_PRIVATE_KEY"):
        return jwt.encode(claims, _pem(config["JWT_PRIVATE_KEY"]), algorithm="RS256")
    raise RuntimeError("minting needs JWT_SECRET or JWT_PRIVATE_KEY")


def bearer_token(sources: Iterable[str | None] = ()) -> str:
    """The token of the `Authorization: Bearer` header, else the first of `sources` given."""
    scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for candidate in sources:
        if candidate:
            return candidate
    raise Unauthorized("missing bearer token")


def authenticate(token: str) -> None:
    """Check `token` and record who the request acts for in `g.user_id` (and `g.service`)."""
    claims = current_app.extensions["shared.auth"].verify(token)
    g.token_expires_at = claims["exp"]  # an open socket is closed then
    named_user = request.headers.get(USER_HEADER)
    if claims.get("typ") == SERVICE_TYPE:
        g.service = claims["sub"]
        if named_user is None:
            return
        if not _USER_ID.fullmatch(named_user):
            raise Unauthorized(f"malformed {USER_HEADER} header")
        g.user_id = named_user
        return
    if named_user is not None and named_user != claims["sub"]:
        raise Forbidden(f"only a service token may act for another user ({USER_HEADER})")
    g.user_id = claims["sub"]


def require_user() -> None:
    """`before_request` of user-facing blueprints: a user token, or a service token naming a user."""
    authenticate(bearer_token())
    if "user_id" not in g:
        raise Forbidden(f"a service token must name the user in the {USER_HEADER} header")


def require_service() -> None:
    """`before_request` of internal blueprints: only a service token passes."""
    authenticate(bearer_token())
    if "service" not in g:
        raise Forbidden("this route is for services only")


def current_user_id() -> str:
    return g.user_id


def check_same_user(user_id: str | None) -> str:
    """The acting user; a user id named in a body or path must be theirs (else 403)."""
    if user_id is not None and user_id != g.user_id:
        raise Forbidden("user_id does not match the token")
    return g.user_id


def init_app(app: Flask) -> None:
    app.extensions["shared.auth"] = TokenVerifier(app.config)
