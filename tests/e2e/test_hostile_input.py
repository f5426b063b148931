"""Hostile input on every write route (top-up, grant, revert, spend, hold, capture, release, webhook
endpoint registration, balance alert, the Stripe webhook): oversized, wrongly typed, malformed, NaN,
huge, negative, over-precise, unknown fields, control and bidi characters, bad path ids, forged tokens.
Each is a 4xx with a JSON message, and nothing is written: no database commit, no PaymentIntent, no
balance or hold changed. No answer carries a stack trace or a secret."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import jsonschema_rs
import jwt
import pytest
import stripe
from falcon.testing import Result

from entrypoints.http.app import create_app
from entrypoints.http.body import BATCH_SPENDS_PATH, MAX_BATCH_BODY_BYTES
from entrypoints.http.routes import OPERATIONS
from tests.e2e.conftest import JWT_SECRET, WEBHOOK_SECRET, Service, run_waitress

STRIPE_KEY = "sk_test_e2e"  # the key conftest's settings carry
SECRETS = (JWT_SECRET, WEBHOOK_SECRET, STRIPE_KEY, "whsec_", "sk_test")
VICTIM = "victim"
BIG = b'{"reason": "' + b"x" * (64 * 1024) + b'"}'


@dataclass(frozen=True)
class Route:
    name: str
    path: str  # {hold} is filled with the open hold's id, {tx} with the victim's grant's transaction id
    valid: dict[str, Any]
    amount: str | None = "credits"
    reason: str | None = "reason"
    optional_body: bool = False
    extra_fields: tuple[str, ...] = field(default=())
    method: str = "POST"


ROUTES = [
    Route("top-up", "/api/v1/users/me/wallet/top-up", {"amount_usd": "10.00"}, amount="amount_usd", reason=None),
    Route("grant", f"/api/v1/admin/users/{VICTIM}/wallet/grant", {"credits": "1.00", "reason": "promo"},
          extra_fields=("expires_at", "effective_at", "priority", "category")),
    Route("revert", "/api/v1/admin/transactions/{tx}/revert", {"reason": "wrong user"}, amount=None,
          extra_fields=("dry_run",)),
    Route("spend", f"/api/v1/admin/users/{VICTIM}/wallet/spend", {"credits": "1.00", "reason": "use"},
          extra_fields=("metadata",)),
    Route("hold", f"/api/v1/admin/users/{VICTIM}/wallet/holds", {"credits": "1.00", "reason": "job"},
          extra_fields=("metadata", "expires_in_seconds")),
    Route("capture", "/api/v1/admin/holds/{hold}/capture", {"credits": "1.00", "reason": "done"},
          optional_body=True),
    Route("release", "/api/v1/admin/holds/{hold}/release", {"reason": "cancel"}, amount=None, optional_body=True),
    # A public address written as an IP, so registering it needs no DNS (nothing is sent to it here).
    Route("webhook-endpoint", "/api/v1/admin/webhook-endpoints", {"url": "https://1.1.1.1/hooks", "events": ["*"]},
          amount=None, reason=None, extra_fields=("description",)),
    Route("alert", f"/api/v1/admin/users/{VICTIM}/wallet/alerts", {"low_balance_credits": "1.00"},
          amount="low_balance_credits", reason=None, method="PUT"),
    Route("auto-top-up", "/api/v1/users/me/wallet/auto-top-up", {"threshold_credits": "5.00", "amount_usd": "10.00"},
          amount="threshold_credits", reason=None, method="PUT", extra_fields=("monthly_limit_usd",)),
    Route("auto-top-up-admin", f"/api/v1/admin/users/{VICTIM}/wallet/auto-top-up",
          {"threshold_credits": "5.00", "target_credits": "50.00"}, amount="target_credits", reason=None,
          method="PUT", extra_fields=("monthly_limit_usd",)),
]
ADMIN_ONLY = ("grant", "revert", "webhook-endpoint", "alert", "auto-top-up-admin")
USERS_OWN = ("top-up", "auto-top-up")  # the token's user's own wallet: any valid token, no id in the path
WITH_ROLE = [r for r in ROUTES if r.name not in USERS_OWN]
# Its envelope is refused like any body; its items' values are answered per item (status "invalid").
BATCH = Route("spend-batch", BATCH_SPENDS_PATH, {"spends": [{"user_id": VICTIM, "credits": "1.00", "reason": "use",
                                                             "idempotency_key": "batch-1"}]},
              amount=None, reason=None)
BY_NAME = {r.name: r for r in ROUTES}


@dataclass
class World:
    svc: Service
    hold_id: str
    grant_id: str
    key_counter: list[int] = field(default_factory=lambda: [0])

    def url(self, route: Route) -> str:
        return route.path.replace("{hold}", self.hold_id).replace("{tx}", self.grant_id)

    def send(self, route: Route, *, path: str | None = None, **options: Any) -> Result:
        """The route's request (its method) to its path, or to `path`."""
        return self.svc.client.simulate_request(route.method, path or self.url(route), **options)

    def headers(self, route: Route, **extra: str) -> dict[str, str]:
        self.key_counter[0] += 1
        who = self.svc.auth(VICTIM) if route.name in USERS_OWN else self.svc.auth("backend", service=True)
        if route.name in ADMIN_ONLY:
            who = self.svc.auth("root", admin=True)
        return {**who, "Idempotency-Key": f"hostile-{self.key_counter[0]}", "Content-Type": "application/json",
                **extra}

    def snapshot(self) -> tuple[Any, ...]:
        wallet = self.svc.container.wallet()
        view = wallet.wallet(VICTIM, recent=100)
        rows = [(t.id, str(t.credits), str(t.held_change)) for t in view.transactions]
        return (str(view.balance), str(view.held), rows, len(self.svc.gateway.create_calls),
                len(self.svc.gateway.intents))


@pytest.fixture
def world(service: Service) -> World:
    """The victim has 100.00 credits and a 10.00 open hold; then the commit counter starts from zero."""
    grant = service.client.simulate_post(f"/api/v1/admin/users/{VICTIM}/wallet/grant",
                                         json={"credits": "100.00", "reason": "funds"},
                                         headers=service.auth("root", admin=True))
    assert grant.status_code == 201, grant.text
    hold = service.client.simulate_post(f"/api/v1/admin/users/{VICTIM}/wallet/holds",
                                        json={"credits": "10.00", "reason": "job"},
                                        headers={**service.auth("backend", service=True), "Idempotency-Key": "h-0"})
    assert hold.status_code == 201, hold.text
    service.commits.clear()
    return World(service, hold.json["hold_id"], grant.json["transaction_id"])


def assert_clean_error(resp: Result, status: int | tuple[int, ...]) -> None:
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status_code in statuses, (resp.status_code, resp.text[:300])
    assert resp.headers["Content-Type"].startswith("application/json")
    body = resp.json
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["description"], str) and body["description"]
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    for secret in SECRETS:
        assert secret not in resp.text


def refused(world: World, route: Route, body: bytes, status: int | tuple[int, ...], **headers: str) -> Result:
    before = world.snapshot()
    resp = world.send(route, body=body, headers=world.headers(route, **headers))
    assert_clean_error(resp, status)
    assert world.svc.commits == [], f"{route.name} wrote something for {body[:80]!r}"
    assert world.snapshot() == before
    return resp


def with_fields(route: Route, **changes: object) -> bytes:
    return json.dumps({**route.valid, **changes}).encode()


def raw_with(route: Route, name: str, literal: str) -> bytes:
    """The valid body with `name` set to a raw JSON literal (NaN, 1e400, ...) json.dumps cannot write."""
    others = ", ".join(f'"{k}": {json.dumps(v)}' for k, v in route.valid.items() if k != name)
    return ("{" + f'"{name}": {literal}' + (f", {others}" if others else "") + "}").encode()


# -- the valid request is accepted, so each refusal below is the hostile part's doing -------------


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_the_valid_request_of_each_route_is_accepted(world: World, route: Route) -> None:
    resp = world.send(route, body=json.dumps(route.valid).encode(),
                                          headers=world.headers(route))
    assert resp.status_code in (200, 201), resp.text
    assert world.svc.commits == ["commit"]


# -- size, content type, JSON syntax ---------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_a_body_over_64_kib_is_413(world: World, route: Route) -> None:
    refused(world, route, BIG, 413)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "application/xml",
                                          "multipart/form-data; boundary=x", "application/jsonx", "json"])
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_a_wrong_content_type_is_415(world: World, route: Route, content_type: str) -> None:
    refused(world, route, json.dumps(route.valid).encode(), 415, **{"Content-Type": content_type})


@pytest.mark.parametrize("content_type", ["application/JSON; charset=UTF-8", "Application/Json",
                                          "APPLICATION/JSON;CHARSET=utf-8", "application/json ; charset=utf-8"])
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_media_types_are_case_insensitive(world: World, route: Route, content_type: str) -> None:
    """RFC 9110: type, subtype and parameter names are case-insensitive."""
    resp = world.send(route, body=json.dumps(route.valid).encode(),
                                          headers=world.headers(route, **{"Content-Type": content_type}))
    assert resp.status_code in (200, 201), resp.text
    assert world.svc.commits == ["commit"]


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_a_body_without_content_type_is_415(world: World, route: Route) -> None:
    before = world.snapshot()
    headers = world.headers(route)
    del headers["Content-Type"]
    resp = world.send(route, body=json.dumps(route.valid).encode(), headers=headers)
    assert_clean_error(resp, 415)
    assert world.svc.commits == [] and world.snapshot() == before


MALFORMED = [
    b'{"credits": "1.00"',
    b"{'credits': '1.00'}",
    b'{"credits": "1.00",}',
    b'{"a": 1}{"b": 2}',
    b"\xff\xfe{}",
    b'\xef\xbb\xbf{"credits": "1.00", "reason": "bom"}',
    b'{"reason": "\\ud800"}',
    b'{"reason": "x", "metadata": ' + b'{"a": ' * 40 + b'"deep"' + b"}" * 40 + b"}",
    b"[" * 5000 + b"]" * 5000,
    b"null",
    b"{",
]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_malformed_json_is_400(world: World, route: Route, body: bytes) -> None:
    status = 422 if body == b"null" else 400  # null is JSON, just not an object
    refused(world, route, body, status)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("route", [r for r in ROUTES if r.amount], ids=lambda r: r.name)
def test_nan_and_infinity_are_not_numbers(world: World, route: Route, literal: str) -> None:
    assert route.amount is not None  # for the type checker: only routes with an amount are parametrized
    resp = refused(world, route, raw_with(route, route.amount, literal), 400)
    assert "not a number" in resp.json["description"]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.amount], ids=lambda r: r.name)
def test_nan_and_infinity_as_strings_are_422(world: World, route: Route) -> None:
    assert route.amount is not None  # for the type checker: only routes with an amount are parametrized
    for text in ("NaN", "Infinity", "-Infinity", "inf", "sNaN"):
        refused(world, route, with_fields(route, **{route.amount: text}), 422)


def test_every_json_body_route_is_in_this_module() -> None:
    """So each refusal below is tried on every route that reads a JSON body (the webhook has its own, and
    so has the batch of spends, whose items are answered one by one: see "a batch of spends" below)."""
    served = {op.path.replace("{user_id}", VICTIM).replace("{hold_id}", "{hold}").replace("{transaction_id}", "{tx}")
              for op in OPERATIONS if op.body is not None and not op.body.raw}
    assert served == {route.path for route in ROUTES} | {BATCH.path}


# Exponents past what Decimal can even hold (decimal.InvalidOperation, an ArithmeticError, was a 500).
ASTRONOMICAL = ["1e1000000000000000000", "-1E+1000000000000000000", "1e-10000000000000000000",
                "0e99999999999999999999", "1.5e" + "9" * 5000]


@pytest.mark.parametrize("literal", ASTRONOMICAL)
@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_a_number_with_an_astronomical_exponent_anywhere_is_4xx(world: World, route: Route, literal: str) -> None:
    for name in [*route.valid, "unknown"]:
        refused(world, route, raw_with(route, name, literal), 422)


# -- types, unknown fields -------------------------------------------------------------------------


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_wrong_json_types_are_422(world: World, route: Route) -> None:
    bodies = [b"[]", b'"credits"', b"5", b"true"]
    if route.amount:
        wrong: tuple[object, ...] = (True, [], {}, ["1.00"])
        if not route.optional_body:
            wrong = (True, None, [], {}, ["1.00"])  # null: all
        bodies += [with_fields(route, **{route.amount: value}) for value in wrong]
    if route.reason:
        reasons: tuple[object, ...] = (5, True, [], {"x": "y"})
        bodies += [with_fields(route, **{route.reason: value}) for value in reasons]
    if "metadata" in route.extra_fields:
        bodies += [with_fields(route, metadata=value) for value in ("k=v", ["k", "v"], {"k": 1}, {"k": None},
                                                                     {"k": {"nested": "v"}}, 5)]
    if "expires_in_seconds" in route.extra_fields:
        bodies += [with_fields(route, expires_in_seconds=value) for value in ("600", 1.5, True, [600])]
        bodies += [raw_with(route, "expires_in_seconds", "600.0")]
    for instant in ("expires_at", "effective_at"):
        if instant in route.extra_fields:
            bodies += [with_fields(route, **{instant: value}) for value in (1893456000, True, ["2030-01-01T00:00:00Z"])]
    if "priority" in route.extra_fields:
        bodies += [with_fields(route, priority=value) for value in ("10", 1.5, True, None, [10])]
        bodies += [raw_with(route, "priority", "10.0")]
    if "category" in route.extra_fields:
        bodies += [with_fields(route, category=value) for value in (1, True, None, ["paid"], {"paid": True})]
    if "dry_run" in route.extra_fields:
        not_booleans: tuple[object, ...] = ("yes", "true", 1, 0, None, [True], {})
        bodies += [with_fields(route, dry_run=value) for value in not_booleans]
    for body in bodies:
        resp = refused(world, route, body, 422)
        assert resp.json["title"] == "Invalid input"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_unknown_fields_are_422_and_named(world: World, route: Route) -> None:
    for extra in ({"user_id": "mallory"}, {"__proto__": {"admin": True}}, {"Credits": "1.00"},
                  {"reason ": "x"}, {"amount\u202e": "1"}, {"a" * 5000: 1}):
        resp = refused(world, route, with_fields(route, **extra), 422)
        assert "unknown field" in resp.json["description"]
        assert len(resp.json["description"]) < 300  # a long name is cut, not echoed whole


@pytest.mark.parametrize("route", [r for r in ROUTES if not r.optional_body], ids=lambda r: r.name)
def test_a_missing_required_field_or_body_is_4xx(world: World, route: Route) -> None:
    refused(world, route, b"", 400)
    refused(world, route, b"{}", 422)
    for name in route.valid:
        body = {k: v for k, v in route.valid.items() if k != name}
        resp = refused(world, route, json.dumps(body).encode(), 422)
        assert name in resp.json["description"]


# -- amounts -----------------------------------------------------------------------------------------

HUGE = ["1e400", "1e999999999", "-1e999999999", "9" * 60, "99999999999999999999.99", "1" + "0" * 4000]
NOT_POSITIVE = ['"-1.00"', '"0"', '"0.00"', '"-0"', "0", "-5", "0.00", "-0.01", '"+0"']
TOO_PRECISE = ['"1.001"', "1.001", '"0.005"', "1e-3", '"10.000000000000000000001"', "1e-999999999"]
NOT_DECIMAL = ['"ten"', '"1,00"', '"1e2"', '"0x10"', '"\u0661\u0660"', '"1_000"', '" "', '""', '"$5"', '"1.0.0"']


@pytest.mark.parametrize("kind", ["huge", "not positive", "too precise", "not decimal"])
@pytest.mark.parametrize("route", [r for r in ROUTES if r.amount], ids=lambda r: r.name)
def test_bad_amounts_are_422_with_a_message(world: World, route: Route, kind: str) -> None:
    assert route.amount is not None  # for the type checker: only routes with an amount are parametrized
    literals = {"huge": HUGE + [f'"{n}"' for n in HUGE[:2]], "not positive": NOT_POSITIVE,
                "too precise": TOO_PRECISE, "not decimal": NOT_DECIMAL}[kind]
    for literal in literals:
        resp = refused(world, route, raw_with(route, route.amount, literal), 422)
        assert route.amount in resp.json["description"]


# What the OpenAPI document says of amounts is what the routes accept, and the other way round:
# raw JSON literals, strings and numbers, each tried against the served document's schema for an
# amount and sent to the grant route.
AMOUNTS_ACCEPTED = ['"10.00"', '"10"', '"10.5"', '"0.01"', '"0.5"', '"0.50"', '"7"', '"99999999.99"',
                    "10", "10.5", "1e2", "1.000", "0.01", "2.50E+1"]
AMOUNTS_REFUSED = ['" 10.00 "', '"+10.00"', '"1.0000000000000000000"', '"1.500"', '"010"', '"00.50"',
                   '"10."', '".5"', '"0"', '"0.00"', '"0.0"', '"-1.00"', '"1e2"', '"1000000000000"',
                   '"10.00\\n"', '"\u0661\u0660"', '"1\u00a0"', '"1\uff10"',
                   "0", "-1", "1.001", "1e-3", "1e12", "-0.00"]


def _documented_amount(world: World, literal: str) -> bool:
    doc = world.svc.client.simulate_get("/openapi.json").json
    amount = doc["components"]["schemas"]["GrantRequest"]["properties"]["credits"]
    value = json.loads(literal)
    if isinstance(value, str):
        return jsonschema_rs.validator_for(amount).is_valid(value)  # as a client's JSON Schema validator does
    exact = Decimal(literal)  # the number exactly, as the server reads it
    return (amount["exclusiveMinimum"] < exact < amount["exclusiveMaximum"]
            and exact == exact.quantize(Decimal("0.01")) and "2 decimal places" in amount["description"])


@pytest.mark.parametrize("literal", AMOUNTS_ACCEPTED + AMOUNTS_REFUSED)
def test_an_amount_is_accepted_exactly_when_the_document_says_so(world: World, literal: str) -> None:
    route = BY_NAME["grant"]
    documented = _documented_amount(world, literal)
    assert documented == (literal in AMOUNTS_ACCEPTED), (literal, documented)
    before = world.snapshot()
    resp = world.send(route, body=raw_with(route, "credits", literal),
                                          headers=world.headers(route))
    if documented:
        assert resp.status_code == 201, (literal, resp.text)
        assert resp.json["credits_granted"] == f"{Decimal(json.loads(literal, parse_float=Decimal)):.2f}"
    else:
        assert_clean_error(resp, 422)
        assert "credits" in resp.json["description"]
        assert world.svc.commits == [] and world.snapshot() == before


# -- text: reasons, metadata ------------------------------------------------------------------------

BAD_TEXT = ["\x00", "a\nb", "tab\there", "\x1b[31mred", "del\x7f", "c1\x85", "\u202eevil", "line\u2028sep",
            "iso\u2066late", "", "   ", "x" * 501]


@pytest.mark.parametrize("route", [r for r in ROUTES if r.reason], ids=lambda r: r.name)
def test_control_bidi_empty_and_overlong_reasons_are_422(world: World, route: Route) -> None:
    assert route.reason is not None  # for the type checker: only routes with a reason are parametrized
    for text in BAD_TEXT:
        resp = refused(world, route, with_fields(route, **{route.reason: text}), 422)
        assert route.reason in resp.json["description"]


@pytest.mark.parametrize("route", [r for r in ROUTES if "metadata" in r.extra_fields], ids=lambda r: r.name)
def test_bad_metadata_is_422(world: World, route: Route) -> None:
    for metadata in ({"k\n": "v"}, {"k": "v\x00"}, {"k": "\u202ev"}, {"": "v"}, {"k" * 41: "v"},
                     {"k": "v" * 501}, {f"k{i}": "v" for i in range(21)}):
        refused(world, route, with_fields(route, metadata=metadata), 422)


def test_plain_unicode_text_in_a_reason_is_kept(world: World) -> None:
    """Accents and scripts are text, not an attack: only controls, separators and bidi overrides go."""
    route = BY_NAME["grant"]
    resp = world.send(route, json={"credits": "1.00", "reason": "café 日本 ✓"},
                                          headers=world.headers(route))
    assert resp.status_code == 201
    assert world.svc.container.wallet().wallet(VICTIM).transactions[0].reason == "café 日本 ✓"


@pytest.mark.parametrize("route", [BY_NAME["spend"], BY_NAME["hold"], BY_NAME["top-up"], BY_NAME["grant"],
                                   BY_NAME["revert"]], ids=lambda r: r.name)
def test_bad_idempotency_keys_are_422(world: World, route: Route) -> None:
    for key in ("has space", "ünïcode", "x" * 256, "tab\tkey"):
        refused(world, route, json.dumps(route.valid).encode(), 422, **{"Idempotency-Key": key})


# -- path ids -----------------------------------------------------------------------------------------

BAD_IDS = ["%C3%A5lice", "al%20ice", "a%00b", "a%0Ab", "%E2%80%AEevil", "x" * 129, "-dash", ".", "..",
           "a%2Fb", "%F0%9F%92%B8", "a%7Fb", "a%C2%85b"]


@pytest.mark.parametrize("bad", BAD_IDS)
# The top-up's and the own rule's user comes from the token; the webhook endpoint's path has no id.
@pytest.mark.parametrize("route", [r for r in WITH_ROLE if "/users/" in r.path or "{" in r.path], ids=lambda r: r.name)
def test_bad_path_ids_are_4xx(world: World, route: Route, bad: str) -> None:
    path = route.path.replace(f"/users/{VICTIM}/", f"/users/{bad}/").replace("{hold}", bad).replace("{tx}", bad)
    before = world.snapshot()
    resp = world.send(route, body=json.dumps(route.valid).encode(), headers=world.headers(route), path=path)
    assert_clean_error(resp, (404, 422))
    assert world.svc.commits == [] and world.snapshot() == before


PI_IDS_REFUSED = [b for b in BAD_IDS if b not in (".", "..", "-dash", "x" * 129)] + ["x" * 256, "pi-dash"]


@pytest.mark.parametrize("bad", PI_IDS_REFUSED)
def test_bad_payment_intent_ids_are_4xx(world: World, bad: str) -> None:
    resp = world.svc.client.simulate_get(f"/api/v1/admin/payments/{bad}/events",
                                         headers=world.svc.auth("root", admin=True))
    assert_clean_error(resp, (404, 422))


# -- the Stripe webhook ------------------------------------------------------------------------------

HOOK = "/webhooks/stripe"


def _event(world: World, **obj_changes: object) -> dict[str, Any]:
    top_up = world.svc.client.simulate_post(BY_NAME["top-up"].path, json={"amount_usd": "10.00"},
                                            headers={**world.svc.auth("buyer"), "Idempotency-Key": "hook-buy"})
    assert top_up.status_code in (200, 201), top_up.text
    world.svc.commits.clear()
    intent = world.svc.gateway.intent_object(world.svc.gateway.intents[top_up.json["payment_intent_id"]])
    intent.update(status="succeeded", amount_received=intent["amount"])
    intent.update(obj_changes)
    return {"id": f"evt_hostile_{time.monotonic_ns()}", "object": "event", "type": "payment_intent.succeeded",
            "data": {"object": intent}}


def _sign(payload: bytes) -> str:
    header: str = stripe.WebhookSignature.generate_signature_header(payload.decode("utf-8", "replace"), WEBHOOK_SECRET)
    return header


def _hook(
    world: World,
    payload: bytes,
    status: int | tuple[int, ...],
    *,
    signed: bool = True,
    content_type: str = "application/json",
) -> Result:
    before = world.snapshot()
    buyer = world.svc.container.wallet().wallet("buyer")
    headers = {"Content-Type": content_type}
    if signed:
        headers["Stripe-Signature"] = _sign(payload)
    resp = world.svc.client.simulate_post(HOOK, body=payload, headers=headers)
    assert_clean_error(resp, status)
    assert world.svc.commits == [], payload[:100]
    assert world.snapshot() == before
    assert world.svc.container.wallet().wallet("buyer").balance == buyer.balance
    return resp


def test_webhook_refuses_size_content_type_and_syntax_before_anything_else(world: World) -> None:
    good = json.dumps(_event(world)).encode()
    _hook(world, b'{"id": "' + b"x" * (64 * 1024) + b'"}', 413)
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        _hook(world, good, 415, content_type=content_type)
    for body in [*MALFORMED, b'{"id": NaN}', b'{"id": "evt", "amount": Infinity}']:
        _hook(world, body, 400)


@pytest.mark.parametrize("literal", ASTRONOMICAL)
def test_webhook_with_an_astronomical_exponent_is_400_before_the_signature_check(world: World, literal: str) -> None:
    _hook(world, b'{"id": "evt_x", "amount": ' + literal.encode() + b"}", 400, signed=False)
    _hook(world, b'{"id": "evt_x", "amount": ' + literal.encode() + b"}", 400, signed=False,
          content_type="application/json; charset=utf-8")


@pytest.mark.parametrize("literal", ASTRONOMICAL)
def test_a_signed_webhook_with_an_astronomical_exponent_is_400(world: World, literal: str) -> None:
    """Signed, so it passes the signature check: the event's own parse must refuse it too."""
    payload = json.dumps(_event(world)).encode().replace(b'"amount": 1000', b'"amount": ' + literal.encode(), 1)
    assert literal.encode() in payload
    _hook(world, payload, 400)


def test_an_astronomical_exponent_through_a_real_socket_is_4xx_and_writes_nothing(world: World) -> None:
    """Over waitress: the grant route and the webhook answer a JSON error, not a 500."""
    route = BY_NAME["grant"]
    before = world.snapshot()
    with contextlib.contextmanager(run_waitress)(create_app(world.svc.container)) as server:
        answers = []
        for path, body, headers in [
            (world.url(route), raw_with(route, "credits", ASTRONOMICAL[0]), world.headers(route)),
            (HOOK, b'{"id": "evt_x", "amount": ' + ASTRONOMICAL[0].encode() + b"}",
             {"Content-Type": "application/json", "Stripe-Signature": "t=1,v1=00"}),
        ]:
            conn = http.client.HTTPConnection(server.host, server.port, timeout=30)
            try:
                conn.request("POST", path, body=body, headers=headers)
                resp = conn.getresponse()
                answers.append((resp.status, json.loads(resp.read())))
            finally:
                conn.close()
    assert [status for status, _ in answers] == [422, 400], answers
    assert "credits" in answers[0][1]["description"]
    assert world.svc.commits == [] and world.snapshot() == before


def test_webhook_media_type_is_case_insensitive(world: World) -> None:
    payload = json.dumps(_event(world)).encode()
    resp = world.svc.client.simulate_post(HOOK, body=payload, headers={
        "Content-Type": "application/JSON; charset=UTF-8", "Stripe-Signature": _sign(payload)})
    assert (resp.status_code, resp.json.get("outcome")) == (200, "granted"), resp.text
    assert world.svc.container.wallet().wallet("buyer").balance.minor == 100000


def test_an_unsigned_or_forged_hostile_event_is_400(world: World) -> None:
    event = _event(world)
    payload = json.dumps(event).encode()
    _hook(world, payload, 400, signed=False)
    forged = stripe.WebhookSignature.generate_signature_header(payload.decode(), "whsec_attacker")
    before = world.snapshot()
    resp = world.svc.client.simulate_post(HOOK, body=payload, headers={"Content-Type": "application/json",
                                                                       "Stripe-Signature": forged})
    assert_clean_error(resp, 400)
    assert world.svc.commits == [] and world.snapshot() == before


@pytest.mark.parametrize("changes", [
    {"amount": "1000"}, {"amount": -1000}, {"amount": True}, {"amount": None}, {"currency": 5},
    {"id": 5}, {"id": None},
], ids=str)
def test_a_signed_event_with_wrong_types_is_400_and_grants_nothing(world: World, changes: dict[str, object]) -> None:
    _hook(world, json.dumps(_event(world, **changes)).encode(), 400)


def test_a_signed_event_with_a_fractional_or_huge_amount_is_400(world: World) -> None:
    for literal in ("1000.5", "1e3", "1e999999999", "1000.0"):
        event = _event(world)
        text = json.dumps(event).replace(f'"amount": {event["data"]["object"]["amount"]}', f'"amount": {literal}', 1)
        assert literal in text
        _hook(world, text.encode(), 400)


def test_a_signed_event_with_an_absurd_whole_amount_grants_nothing(world: World) -> None:
    """Signed by Stripe, so it is logged and the top-up is held for review; but no credits move."""
    event = _event(world)
    received = event["data"]["object"]["amount_received"]
    text = json.dumps(event).replace(f'"amount_received": {received}', f'"amount_received": {"9" * 60}', 1)
    assert "9" * 60 in text
    resp = world.svc.client.simulate_post(HOOK, body=text.encode(), headers={
        "Content-Type": "application/json", "Stripe-Signature": _sign(text.encode())})
    assert resp.status_code == 200 and resp.json["outcome"] == "needs_review"
    assert world.svc.container.wallet().wallet("buyer").balance.minor == 0


def test_a_signed_event_without_id_or_type_is_400(world: World) -> None:
    for drop in ("id", "type"):
        event = {k: v for k, v in _event(world).items() if k != drop}
        _hook(world, json.dumps(event).encode(), 400)
    event = _event(world)
    event["data"] = "not an object"
    _hook(world, json.dumps(event).encode(), 400)


# -- tokens -------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(
    header: dict[str, Any],
    claims: dict[str, Any],
    key: bytes = JWT_SECRET.encode(),
    digest: Callable[[], Any] = hashlib.sha256,
) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{_b64(signature)}"


def _tokens() -> dict[str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyJWT warns that the HS512 key is short: it is meant to fail
        return _forged_tokens()


def _forged_tokens() -> dict[str, str]:
    now = int(time.time())
    good = {"sub": "root", "roles": ["admin", "service"], "iat": now, "exp": now + 600}
    none_header = json.dumps({"alg": "none", "typ": "JWT"}).encode()
    return {
        "expired": jwt.encode({**good, "exp": now - 5}, JWT_SECRET, algorithm="HS256"),
        "alg none": f"{_b64(none_header)}.{_b64(json.dumps(good).encode())}.",
        "alg none signed": _forge({"alg": "none", "typ": "JWT"}, good),
        "HS512": jwt.encode(good, JWT_SECRET, algorithm="HS512"),
        "RS256 header, HMAC body": _forge({"alg": "RS256", "typ": "JWT"}, good),
        "HS256 header, SHA-512 HMAC": _forge({"alg": "HS256", "typ": "JWT"}, good, digest=hashlib.sha512),
        "wrong secret": jwt.encode(good, "another-secret-that-is-long-enough-0123456789", algorithm="HS256"),
        "missing sub": jwt.encode({k: v for k, v in good.items() if k != "sub"}, JWT_SECRET, algorithm="HS256"),
        "missing exp": jwt.encode({k: v for k, v in good.items() if k != "exp"}, JWT_SECRET, algorithm="HS256"),
        "empty sub": jwt.encode({**good, "sub": ""}, JWT_SECRET, algorithm="HS256"),
        "sub with a space": jwt.encode({**good, "sub": "ro ot"}, JWT_SECRET, algorithm="HS256"),
        "sub not a string": jwt.encode({**good, "sub": 7}, JWT_SECRET, algorithm="HS256"),
        "unicode sub": jwt.encode({**good, "sub": "r\u202eoot"}, JWT_SECRET, algorithm="HS256"),
        "roles not a list": jwt.encode({**good, "roles": "admin"}, JWT_SECRET, algorithm="HS256"),
        "not yet valid": jwt.encode({**good, "nbf": now + 600}, JWT_SECRET, algorithm="HS256"),
        "garbage": "not-a-jwt",
        "two parts": "abc.def",
        "tampered": jwt.encode(good, JWT_SECRET, algorithm="HS256")[:-3] + "AAA",
    }


TOKENS = _tokens()


@pytest.mark.parametrize("name", list(TOKENS))
def test_bad_tokens_are_401_on_every_write_route_and_write_nothing(world: World, name: str) -> None:
    for route in ROUTES:
        before = world.snapshot()
        headers = {**world.headers(route), "Authorization": f"Bearer {TOKENS[name]}"}
        resp = world.send(route, body=json.dumps(route.valid).encode(),
                                              headers=headers)
        assert_clean_error(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert world.svc.commits == [] and world.snapshot() == before
    resp = world.svc.client.simulate_get("/api/v1/users/me/wallet", headers={"Authorization": f"Bearer {TOKENS[name]}"})
    assert_clean_error(resp, 401)


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic cm9vdDpyb290", "bearer", "Token abc",
                                    "Bearer a b c"])
def test_malformed_authorization_headers_are_401(world: World, header: str) -> None:
    route = BY_NAME["grant"]
    resp = world.send(route, json=route.valid, headers={"Authorization": header})
    assert_clean_error(resp, 401)
    assert world.svc.commits == []


def test_a_valid_token_without_the_role_is_403_and_writes_nothing(world: World) -> None:
    for route in WITH_ROLE:
        before = world.snapshot()
        headers = {**world.headers(route), **world.svc.auth("plain-user")}
        resp = world.send(route, body=json.dumps(route.valid).encode(),
                                              headers=headers)
        assert_clean_error(resp, 403)
        assert world.svc.commits == [] and world.snapshot() == before


def test_errors_ignore_the_accept_header_and_stay_json(world: World) -> None:
    route = BY_NAME["grant"]
    for accept in ("application/xml", "text/html", "text/plain", "image/png"):
        resp = world.send(route, body=b"{", headers={**world.headers(route),
                                                                                    "Accept": accept})
        assert_clean_error(resp, 400)
    resp = world.svc.client.simulate_get("/no/such/route", headers={"Accept": "application/xml"})
    assert_clean_error(resp, 404)
    resp = world.svc.client.simulate_delete("/api/v1/users/me/wallet")
    assert_clean_error(resp, 405)


# -- a batch of spends ------------------------------------------------------------------------------
# The envelope meets every refusal above; hostile values inside an item make that item "invalid" (200),
# never a 500, and write nothing for it.


def test_a_batch_envelope_is_refused_like_any_body(world: World) -> None:
    valid = json.dumps(BATCH.valid).encode()
    refused(world, BATCH, b'{"spends": [' + b" " * MAX_BATCH_BODY_BYTES + b"]}", 413)
    refused(world, BATCH, valid, 415, **{"Content-Type": "text/plain"})
    for body in MALFORMED:
        refused(world, BATCH, body, 422 if body == b"null" else 400)
    for literal in ("NaN", "Infinity"):
        refused(world, BATCH, b'{"spends": [{"credits": ' + literal.encode() + b"}]}", 400)
    for body in (b"[]", b'"spends"', b"5", b'{"spends": null}', b'{"spends": {}}', b'{"spends": [1]}',
                 b'{"spends": [[]]}', b'{"spends": []}', b'{"spends": [{}], "x": 1}', b"{}"):
        refused(world, BATCH, body, 422)
    resp = world.send(BATCH, body=valid, headers=world.headers(BATCH))
    assert resp.status_code == 200 and resp.json["results"][0]["status"] == "spent"


def _json(values: Any) -> list[str]:
    return [json.dumps(v) for v in values]


# (field, a raw JSON literal): each replaces the field of a valid item (a later duplicate key wins).
HOSTILE_ITEMS: list[tuple[str, str]] = [
    *(("credits", literal) for literal in [*NOT_POSITIVE, *TOO_PRECISE, *NOT_DECIMAL, *HUGE, *ASTRONOMICAL,
                                           '"NaN"', '"Infinity"', "true", "null", "[1]"]),
    *(("reason", literal) for literal in [*_json(BAD_TEXT), "5", "null"]),
    *(("metadata", literal) for literal in _json([{"k\n": "v"}, {"k": "v\x00"}, {"k": "\u202ev"}, {"": "v"},
                                                  {"k" * 41: "v"}, {"k": "v" * 501}, {f"k{i}": "v" for i in range(21)},
                                                  ["x"], "x", 5])),
    *(("idempotency_key", literal) for literal in _json(["has space", "ünïcode", "x" * 256, "tab\tkey", "", 5,
                                                         None, ["k"]])),
    *(("user_id", literal) for literal in _json(["", " x", "a/b", "x" * 129, "\u202eevil", 5, None])),
    ("extra", "1"),
]


def test_hostile_values_inside_batch_items_make_those_items_invalid_and_write_nothing(world: World) -> None:
    before = world.snapshot()
    items = [f'{{"user_id": "{VICTIM}", "credits": "1.00", "reason": "use", "idempotency_key": "hostile-item-{n}", '
             f'"{name}": {literal}}}' for n, (name, literal) in enumerate(HOSTILE_ITEMS)]
    resp = world.send(BATCH, body=('{"spends": [' + ", ".join(items) + "]}").encode(), headers=world.headers(BATCH))
    assert resp.status_code == 200, resp.text[:300]
    results = resp.json["results"]
    assert [r["status"] for r in results] == ["invalid"] * len(HOSTILE_ITEMS), [
        (HOSTILE_ITEMS[r["index"]], r) for r in results if r["status"] != "invalid"]
    fields = [r["error"]["field"] for r in results]
    assert fields == [name if name != "extra" else "item" for name, _ in HOSTILE_ITEMS]
    assert all(r["error"]["message"] for r in results)
    assert "Traceback" not in resp.text and all(secret not in resp.text for secret in SECRETS)
    assert world.svc.commits == [] and world.snapshot() == before
