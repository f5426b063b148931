"""Bearer tokens: HS256 JWTs signed with WALLET_JWT_SECRET. `sub` is the user, `roles` the powers.

Roles: `admin` (people who grant credits by hand, and everything a service may do) and `service`
(trusted back ends that spend and hold users' credits). A token without roles reads its own wallet.

A token whose signature and claims were checked is remembered (by its exact text, at most
TOKEN_CACHE_SIZE of them, each for at most TOKEN_CACHE_SECONDS): a back end sends the same token with
every request, and checking its signature again (PyJWT) cost ~0.1 ms of a ~0.5 ms spend (issue 14).
Its times are checked again on every request, so it is refused from the instant it expires, exactly
as an unremembered one; anything but a token that passed is never remembered.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import falcon
import jwt

from wallet_core.errors import InvalidInput
from wallet_core.ids import check_user_id

ALGORITHM = "HS256"
ADMIN = "admin"
SERVICE = "service"
TOKEN_CACHE_SIZE = 1024  # tokens remembered at once; when full, the oldest is forgotten
TOKEN_CACHE_SECONDS = 60.0  # how long one is remembered (never past its exp)


@dataclass(frozen=True)
class Principal:
    user_id: str
    roles: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles

    def actor(self, roles: tuple[str, ...]) -> str:
        """Who did it, for the audit trail: the first of `roles` the token has, and the user."""
        role = next((r for r in roles if r in self.roles), "user")
        return f"{role}:{self.user_id}"


@dataclass(frozen=True)
class _Checked:
    """A token that passed: who it is, and the times between which it is valid (now as then)."""

    principal: Principal
    valid_from: float  # its iat or nbf, the later (-inf without either)
    expires: float  # its exp
    forget_at: float  # when the cache checks it again from scratch


class JwtAuthenticator:
    def __init__(self, secret: object | None, *, dev_secret_file: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        # `secret` is an entrypoints.settings.Secret (or None when WALLET_JWT_SECRET is unset).
        # `dev_secret_file`: in development without WALLET_JWT_SECRET, the file the secret is kept in,
        # named (never shown) when a signature does not match, so a developer knows which secret won.
        self._secret = secret
        self._dev_secret_file = dev_secret_file
        self._clock = clock
        self._checked: dict[str, _Checked] = {}  # token text -> what checking it found (read without the lock)
        self._checked_lock = threading.Lock()  # held to add or forget one

    def __repr__(self) -> str:
        return f"JwtAuthenticator(secret={'set' if self._secret else 'unset'})"

    def _key(self) -> str:
        if self._secret is None:
            raise falcon.HTTPServiceUnavailable(
                title="Authentication not configured",
                description="WALLET_JWT_SECRET is not set, so no token can be checked",
            )
        return self._secret.reveal()  # type: ignore[attr-defined,no-any-return]

    def mint(self, user_id: str, *, roles: list[str] | None = None, ttl_seconds: int = 3600) -> str:
        now = int(time.time())
        claims = {"sub": check_user_id(user_id), "roles": roles or [], "iat": now, "exp": now + ttl_seconds}
        return jwt.encode(claims, self._key(), algorithm=ALGORITHM)

    def authenticate(self, req: falcon.Request) -> Principal:
        key = self._key()
        header = req.get_header("Authorization") or ""
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise _unauthorized("send 'Authorization: Bearer <token>'")
        now = self._clock()
        checked = self._checked.get(token)
        if checked is not None and checked.valid_from <= now < checked.expires and now < checked.forget_at:
            return checked.principal
        checked = self._check(token, key, now)
        self._remember(token, checked)
        return checked.principal

    def _remember(self, token: str, checked: _Checked) -> None:
        with self._checked_lock:
            if len(self._checked) >= TOKEN_CACHE_SIZE and token not in self._checked:
                del self._checked[next(iter(self._checked))]  # the oldest (dicts keep insertion order)
            self._checked[token] = checked

    def _check(self, token: str, key: str, now: float) -> _Checked:
        """Everything about the token, from scratch (401 saying what is wrong)."""
        try:
            # The signature is checked here; the times below, once they are known to be numbers (PyJWT
            # would take "exp": "9999999999", a string, and "iat": true).
            claims = jwt.decode(token, key, algorithms=[ALGORITHM], options={
                "require": ["sub", "exp"], "verify_exp": False, "verify_iat": False, "verify_nbf": False})
        except jwt.InvalidSignatureError:
            raise _unauthorized(self._bad_signature()) from None
        except jwt.InvalidTokenError:
            raise _unauthorized("the token is not valid") from None
        _check_times(claims, now)
        try:
            user_id = check_user_id(claims.get("sub"), "sub")
        except InvalidInput:
            raise _unauthorized("the token's sub is not a valid user id") from None
        roles = claims.get("roles") or []
        if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
            raise _unauthorized("the token's roles claim must be a list of strings")
        valid_from = max((claims[name] for name in ("iat", "nbf") if name in claims), default=-math.inf)
        expires = claims["exp"]
        return _Checked(Principal(user_id, frozenset(roles)), valid_from, expires,
                        min(expires, now + TOKEN_CACHE_SECONDS))

    def _bad_signature(self) -> str:
        if self._dev_secret_file is None:
            return "the token is not valid"
        return (
            "the token's signature does not match: in development mode without WALLET_JWT_SECRET, tokens are "
            f"signed with the secret in {self._dev_secret_file} (mint one with `wallet token USER`, as the "
            "same user, with the same XDG_STATE_HOME)"
        )

    def require_any_role(self, req: falcon.Request, *roles: str) -> Principal:
        """The authenticated principal (401 otherwise), if it has at least one of `roles` (403 otherwise)."""
        principal = self.authenticate(req)
        if principal.roles.isdisjoint(roles):
            raise falcon.HTTPForbidden(
                title="Forbidden", description=f"this route needs the {' or '.join(roles)} role"
            )
        return principal

    def require_admin(self, req: falcon.Request) -> Principal:
        return self.require_any_role(req, ADMIN)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_times(claims: dict[str, object], now: float) -> None:
    """exp, iat and nbf are NumericDates (RFC 7519): JSON numbers of seconds since 1970. The token is
    refused unless exp is after now; one issued (iat) or valid (nbf) only later is refused too."""
    for name in ("exp", "iat", "nbf"):
        if name in claims and not _is_number(claims[name]):
            raise _unauthorized(f"the token's {name} claim must be a number (seconds since 1970-01-01 UTC)")
    if claims["exp"] <= now:  # type: ignore[operator]
        raise _unauthorized("the token has expired")
    if any(name in claims and claims[name] > now for name in ("iat", "nbf")):  # type: ignore[operator]
        raise _unauthorized("the token is not valid yet")


def _unauthorized(description: str) -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(title="Unauthorized", description=description, challenges=["Bearer"])
