"""A token that passed is remembered (entrypoints.http.auth), but never past what checking it again would
refuse: its expiry to the instant, a clock set back before its iat or nbf, another token's text, and it
is never written to a log line."""

from __future__ import annotations

import logging

import falcon
import jwt
import pytest
from falcon import testing

from entrypoints.http import auth
from entrypoints.http.auth import JwtAuthenticator
from entrypoints.settings import Secret
from tests.e2e.conftest import JWT_SECRET, Service

NOW = 1_900_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def request(token: str) -> falcon.Request:
    return testing.create_req(path="/api/v1/users/me/wallet", headers={"Authorization": f"Bearer {token}"})


def token(**claims: object) -> str:
    return jwt.encode({"sub": "alice", "roles": ["service"], **claims}, JWT_SECRET, algorithm="HS256")


def refusal(authenticator: JwtAuthenticator, text: str) -> str:
    with pytest.raises(falcon.HTTPUnauthorized) as refused:
        authenticator.authenticate(request(text))
    return str(refused.value.description)


def test_a_remembered_token_is_refused_from_the_instant_it_expires() -> None:
    clock = Clock()
    authenticator = JwtAuthenticator(Secret(JWT_SECRET), clock=clock)
    text = token(iat=NOW - 10, exp=NOW + 30)

    assert authenticator.authenticate(request(text)).user_id == "alice"
    clock.now = NOW + 29.999
    assert authenticator.authenticate(request(text)).roles == frozenset({"service"})  # remembered, still valid
    clock.now = NOW + 30
    assert refusal(authenticator, text) == "the token has expired"
    clock.now = NOW + 3600
    assert refusal(authenticator, text) == "the token has expired"


def test_a_remembered_token_is_refused_when_the_clock_goes_back_before_its_iat_or_nbf() -> None:
    clock = Clock()
    authenticator = JwtAuthenticator(Secret(JWT_SECRET), clock=clock)
    issued = token(iat=NOW, exp=NOW + 600)
    not_before = token(nbf=NOW - 5, exp=NOW + 600)
    assert authenticator.authenticate(request(issued)).user_id == "alice"
    assert authenticator.authenticate(request(not_before)).user_id == "alice"

    clock.now = NOW - 6  # e.g. the system clock stepped back
    assert refusal(authenticator, issued) == "the token is not valid yet"
    assert refusal(authenticator, not_before) == "the token is not valid yet"


def test_only_the_exact_text_of_a_checked_token_is_remembered() -> None:
    authenticator = JwtAuthenticator(Secret(JWT_SECRET), clock=Clock())
    good = token(exp=NOW + 600)
    assert authenticator.authenticate(request(good)).user_id == "alice"

    header, payload, signature = good.split(".")
    tampered = f"{header}.{payload}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}"
    assert refusal(authenticator, tampered) == "the token is not valid"
    other_secret = jwt.encode({"sub": "alice", "roles": ["service"], "exp": NOW + 600}, "x" * 40, algorithm="HS256")
    assert refusal(authenticator, other_secret) == "the token is not valid"
    assert authenticator.authenticate(request(good)).user_id == "alice"  # the good one still passes


def test_a_token_is_checked_again_after_the_cache_time_and_at_most_the_cache_size_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "TOKEN_CACHE_SIZE", 3)
    clock = Clock()
    authenticator = JwtAuthenticator(Secret(JWT_SECRET), clock=clock)
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(text: str, *args: object, **kwargs: object) -> object:
        decoded.append(text)
        return real_decode(text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    tokens = [token(sub=f"user-{n}", exp=NOW + 3600) for n in range(5)]
    for text in tokens:
        authenticator.authenticate(request(text))
        authenticator.authenticate(request(text))
    assert decoded == tokens  # each checked once, then remembered

    authenticator.authenticate(request(tokens[0]))  # forgotten: only the 3 newest are kept
    assert decoded[-1] == tokens[0]
    clock.now = NOW + auth.TOKEN_CACHE_SECONDS
    authenticator.authenticate(request(tokens[4]))  # remembered for TOKEN_CACHE_SECONDS at most
    assert decoded[-1] == tokens[4]
    assert len(decoded) == 7


def test_spends_with_one_token_are_answered_and_the_token_is_never_logged(
    service: Service, caplog: pytest.LogCaptureFixture,
) -> None:
    admin = service.auth("root", admin=True)
    assert service.client.simulate_post("/api/v1/admin/users/alice/wallet/grant", headers=admin,
                                        json={"credits": "5.00", "reason": "gift"}).status_code == 201
    spender = service.auth("billing", service=True)
    caplog.set_level(logging.DEBUG)
    for n in range(3):
        resp = service.client.simulate_post("/api/v1/admin/users/alice/wallet/spend", json={"credits": "1.00",
                                            "reason": "use"}, headers={**spender, "Idempotency-Key": f"k-{n}"})
        assert resp.status_code == 201, resp.text
        assert resp.json["balance"] == f"{4 - n}.00"
    user = service.auth("alice")
    service.client.simulate_get("/api/v1/users/me/wallet", headers=user)
    assert service.client.simulate_get("/api/v1/users/me/wallet", headers=user).json["balance"] == "2.00"

    token_text = spender["Authorization"].removeprefix("Bearer ")
    logged = "\n".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    assert "wallet.access" in {r.name for r in caplog.records}
    assert token_text not in logged
    assert token_text.split(".")[2] not in logged
