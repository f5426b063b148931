"""/openapi.json and /docs describe every route the app serves, from the same schemas that check the
requests; Schemathesis then throws generated requests at every operation, with an admin token and with
none, and no answer may be a 5xx or break the documented status codes and schemas."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import falcon.inspect
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi.schemas import OpenApiSchema

from adapters.fake_gateway import FakePaymentGateway
from entrypoints.http import schemas
from entrypoints.http.body import loads
from entrypoints.http.routes import OPERATIONS
from tests.e2e.conftest import WEBHOOK_SECRET, Service, build_service, make_settings
from wallet_core.errors import InvalidInput

LABELS = sorted(op.label for op in OPERATIONS)
BY_LABEL = {op.label: op for op in OPERATIONS}
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
# Per operation and run: ~15 operations x 4 runs stay well under a minute. Raise it for a deeper hunt.
MAX_EXAMPLES = int(os.environ.get("WALLET_SCHEMATHESIS_EXAMPLES", "25"))
FUNDED = "funded-user"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One app for the module (generated requests pile up in its database, as on a live server)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'wallet.sqlite3'}"
    svc = build_service(make_settings(url), FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)))
    yield svc
    svc.container.shutdown_resources()


@pytest.fixture(scope="module")
def schema(api: Service) -> OpenApiSchema:
    # What negative_data_rejection counts as refusing a request (schemathesis's defaults), and 413: a batch
    # of more than 1,000 spends (maxItems) is often over the 1 MiB a body may be, too.
    refusals = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]
    config = SchemathesisConfig.from_dict({"checks": {"negative_data_rejection": {"expected-statuses": refusals}}})
    return schemathesis.openapi.from_wsgi("/openapi.json", api.client.app, config=config)


def _admin(api: Service) -> dict[str, str]:
    return api.auth("root", admin=True)


# -- the document ---------------------------------------------------------------------------------


def test_every_falcon_route_is_documented_and_every_documented_route_is_served(api: Service) -> None:
    served = {
        f"{method.method} {route.path}"
        for route in falcon.inspect.inspect_routes(api.client.app)
        for method in route.methods
        if not method.internal
    }
    doc = api.client.simulate_get("/openapi.json").json
    documented = {f"{method.upper()} {path}" for path, methods in doc["paths"].items() for method in methods}
    assert served == documented == set(LABELS)


def test_the_document_is_valid_openapi_3_1(schema: OpenApiSchema) -> None:
    assert schema.raw_schema["openapi"].startswith("3.1")
    schema.validate()  # against the OpenAPI 3.1 meta-schema
    for component in schema.raw_schema["components"]["schemas"].values():
        jsonschema_rs.meta.validate(component)  # each is a valid JSON Schema


def test_the_document_declares_auth_idempotency_and_the_stripe_signature(api: Service) -> None:
    doc = api.client.simulate_get("/openapi.json").json
    bearer = doc["components"]["securitySchemes"]["bearerAuth"]
    assert (bearer["type"], bearer["scheme"], bearer["bearerFormat"]) == ("http", "bearer", "JWT")
    signed = doc["components"]["securitySchemes"]["stripeSignature"]
    assert (signed["type"], signed["in"], signed["name"]) == ("apiKey", "header", "Stripe-Signature")
    hook = doc["paths"]["/webhooks/stripe"]["post"]
    assert hook["security"] == [{"stripeSignature": []}]
    [signature] = hook["parameters"]
    assert (signature["name"], signature["in"], signature["required"]) == ("Stripe-Signature", "header", True)
    spend = doc["paths"]["/api/v1/admin/users/{user_id}/wallet/spend"]["post"]
    assert spend["security"] == [{"bearerAuth": []}] and spend["x-roles"] == ["admin", "service"]
    key = next(p for p in spend["parameters"] if p["name"] == "Idempotency-Key")
    assert key["in"] == "header" and key["required"] is True
    top_up = doc["paths"]["/api/v1/users/me/wallet/top-up"]["post"]
    assert next(p for p in top_up["parameters"] if p["name"] == "Idempotency-Key")["required"] is False
    assert doc["paths"]["/healthz"]["get"]["security"] == []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            for status, reply in op["responses"].items():
                if status.startswith(("4", "5")) and "content" in reply:
                    assert reply["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}, (
                        method, path, status)
            if op["security"] == [{"bearerAuth": []}]:
                assert {"401", "503"} <= set(op["responses"]), (method, path)


def test_request_bodies_in_the_document_are_the_schemas_the_app_validates_with(api: Service) -> None:
    doc = api.client.simulate_get("/openapi.json").json
    components = doc["components"]["schemas"]
    for op in OPERATIONS:
        if op.body is None:
            continue
        documented = doc["paths"][op.path][op.method.lower()]["requestBody"]["content"]["application/json"]["schema"]
        name = documented["$ref"].rsplit("/", 1)[-1]
        assert schemas.NAMED[name] is op.body.schema  # the very object read_object checks against
        assert components[name]["type"] == "object"
        if not op.body.raw:
            assert components[name]["additionalProperties"] is False


def test_every_schema_keyword_is_enforced_by_the_validator_or_is_documentation_the_core_checks() -> None:
    for name, schema in schemas.NAMED.items():
        unknown = schemas.keywords(schema) - schemas.STRUCTURAL - schemas.ANNOTATIONS - {"$ref"}
        assert not unknown, (name, unknown)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5)
    | st.decimals(places=2, min_value=-(10**6), max_value=10**6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=8,
)
_bodies = st.one_of(
    _json_values,
    st.fixed_dictionaries({}, optional={
        "credits": _json_values, "reason": _json_values, "metadata": _json_values, "amount_usd": _json_values,
        "expires_at": _json_values, "expires_in_seconds": _json_values, "extra": _json_values,
        "effective_at": _json_values, "priority": _json_values, "category": _json_values, "dry_run": _json_values,
        "spends": _json_values,
    }),
)


@pytest.mark.parametrize("name", sorted(n for n, s in schemas.NAMED.items() if s.get("additionalProperties") is False
                                        and n.endswith("Request")))
@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=_bodies)
def test_the_validator_agrees_with_a_json_schema_validator_on_structure(name: str, body: object) -> None:
    """What `validate` accepts, a real JSON Schema validator accepts when only the structural keywords
    are kept (the value keywords are the core's business), and the other way round; but for integral
    decimals (1.0 is no whole number of seconds here) and unsafe text, which `validate` also refuses."""
    schema = schemas.NAMED[name]
    structural = _structural(schema)
    ours = True
    try:
        schemas.validate(body, schema)
    except InvalidInput:
        ours = False
    # JSON Schema counts 1.0 as an integer; the wallet reads JSON numbers as int or Decimal exactly.
    theirs = jsonschema_rs.validator_for(structural).is_valid(json.loads(json.dumps(body, default=_number)))
    if ours != theirs:  # the only differences allowed: `validate` is stricter on these two
        assert not ours and _any(body, _integral_or_unsafe), (body, ours, theirs)


def _structural(schema: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k in schemas.STRUCTURAL}
    if "properties" in out:
        out["properties"] = {name: _structural(sub) for name, sub in out["properties"].items()}
    for key in ("additionalProperties", "items"):
        if isinstance(out.get(key), dict):
            out[key] = _structural(out[key])
    return out


def _number(value: object) -> object:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    raise TypeError


def _integral_or_unsafe(value: object) -> bool:
    if isinstance(value, Decimal):
        return value == value.to_integral_value()
    return isinstance(value, str) and schemas._UNSAFE.search(value) is not None


def _any(value: object, test: Callable[[object], bool]) -> bool:
    if isinstance(value, dict):
        return any(_any(k, test) or _any(v, test) for k, v in value.items())
    if isinstance(value, list):
        return any(_any(v, test) for v in value)
    return test(value)


def test_openapi_json_is_json_and_docs_is_a_self_contained_page_naming_every_route(api: Service) -> None:
    resp = api.client.simulate_get("/openapi.json")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("application/json")
    assert loads(resp.text)["openapi"] == "3.1.0"

    page = api.client.simulate_get("/docs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")

    class Refs(HTMLParser):
        found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.found += [f"{tag} {k}={v}" for k, v in attrs if k in ("src", "href")]

    refs = Refs()
    refs.feed(page.text)
    # Nothing to fetch: no script, stylesheet, font or image, and links only inside the service.
    assert "<script" not in page.text and "<link" not in page.text and "@import" not in page.text
    assert all(re.fullmatch(r"a href=(#[\w-]+|/openapi\.json)", ref) for ref in refs.found), refs.found
    for op in OPERATIONS:
        assert f"{op.method}</span> <code>{op.path}</code>" in page.text, op.label
    for name in schemas.NAMED:
        assert f'id="schema-{name}"' in page.text


def test_swagger_ui_is_served_with_its_own_files_and_reads_openapi_json(api: Service) -> None:
    page = api.client.simulate_get("/docs/ui")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert 'url: "/openapi.json"' in page.text  # the app's own document

    class Refs(HTMLParser):
        found: list[str] = []

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            self.found += [v for k, v in attrs if k in ("src", "href") and v]

    refs = Refs()
    refs.feed(page.text)
    # Nothing from elsewhere (no CDN): every script, stylesheet and icon is a file this app serves.
    assert "http://" not in page.text and "https://" not in page.text
    assert any(ref.endswith("/swagger-ui-bundle.js") for ref in refs.found)
    assert any(ref.endswith("/swagger-ui.css") for ref in refs.found)
    for ref in refs.found:
        assert ref.startswith("/docs/ui/static/"), ref
        served = api.client.simulate_get(ref)
        assert served.status_code == 200 and len(served.content) > 100, ref
    js = api.client.simulate_get("/docs/ui/static/swagger-ui-bundle.js")
    assert "javascript" in js.headers["Content-Type"]
    assert "SwaggerUIBundle" in js.text


def test_swagger_ui_files_refuse_paths_outside_their_folder(api: Service) -> None:
    for path in ("/docs/ui/static/../../../etc/passwd", "/docs/ui/static/%2e%2e/core.py", "/docs/ui/static/nope.js"):
        resp = api.client.simulate_get(path)
        assert resp.status_code == 404, path
        assert set(resp.json) == {"title", "description"}


# -- schemathesis ---------------------------------------------------------------------------------


def _run(schema: OpenApiSchema, label: str, headers: dict[str, str], mode: GenerationMode, *,
         checks: list[CheckFunction] = CHECKS, path_parameters: dict[str, str] | None = None) -> dict[int, int]:
    op = BY_LABEL[label]
    operation = schema[op.path][op.method]
    statuses: dict[int, int] = {}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case: schemathesis.Case[Any]) -> None:
        # A negative case whose only broken part is an extra query parameter with an empty list for a
        # value is a valid request once sent (an empty list sends nothing, and the test puts the token
        # back): schemathesis would call its 200 "schema-violating request accepted". Skip those.
        assume(not (mode is GenerationMode.NEGATIVE and any(v == [] for v in (case.query or {}).values())))
        response = case.call_and_validate(headers=headers, checks=checks)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1

    run()
    return statuses


def _negatable(label: str) -> bool:
    op = BY_LABEL[label]
    return bool(op.path_params or op.query or op.headers or op.body or not op.access.public)


@pytest.mark.parametrize("label", LABELS)
def test_schemathesis_with_an_admin_token(api: Service, schema: OpenApiSchema, label: str) -> None:
    statuses = _run(schema, label, _admin(api), GenerationMode.POSITIVE)
    assert 500 not in statuses
    if BY_LABEL[label].access.public:
        return
    assert set(statuses) - {401, 403} or label.startswith("POST /webhooks"), statuses  # the token got in


@pytest.mark.parametrize("label", [label for label in LABELS if _negatable(label)])
def test_schemathesis_negative_data_with_an_admin_token_is_refused_with_a_4xx(
    api: Service, schema: OpenApiSchema, label: str
) -> None:
    """Requests that break the document (wrong types, unknown fields, bad ids, missing parts) are
    refused: never 2xx, never 5xx."""
    _run(schema, label, _admin(api), GenerationMode.NEGATIVE, checks=[*CHECKS, negative_data_rejection])


@pytest.mark.parametrize("label", LABELS)
def test_schemathesis_without_a_token(api: Service, schema: OpenApiSchema, label: str) -> None:
    statuses = _run(schema, label, {}, GenerationMode.POSITIVE)
    if not BY_LABEL[label].access.public:
        assert set(statuses) == {401}, statuses


@pytest.mark.parametrize("label", [op.label for op in OPERATIONS if any(p.name == "user_id" for p in op.path_params)])
def test_schemathesis_on_a_funded_wallet(api: Service, schema: OpenApiSchema, label: str) -> None:
    """With credits to spend, generated spends and holds succeed too (and answer what they promise). The
    wallet has an automatic top-up rule (its documented example), so reading or removing it can succeed
    whatever ran before; a body's documented examples are sent too: generated bodies may all break a rule
    the schema cannot say (a top-up rule's threshold below its target, its amount within the limits)."""
    grant = api.client.simulate_post(f"/api/v1/admin/users/{FUNDED}/wallet/grant", headers=_admin(api),
                                     json={"credits": "100000000.00", "reason": "fuel for generated spends"})
    assert grant.status_code == 201, grant.text
    rule = api.client.simulate_put(f"/api/v1/admin/users/{FUNDED}/wallet/auto-top-up", headers=_admin(api),
                                   json=schemas.AUTO_TOP_UP_REQUEST["examples"][0])
    assert rule.status_code == 200, rule.text
    statuses = _run(schema, label, _admin(api), GenerationMode.POSITIVE, path_parameters={"user_id": FUNDED})
    op = BY_LABEL[label]
    body = op.body
    for example in body.schema.get("examples", []) if body is not None and not body.raw else []:
        case = schema[op.path][op.method].Case(path_parameters={"user_id": FUNDED}, body=example,
                                               media_type=falcon.MEDIA_JSON)
        status = case.call_and_validate(headers=_admin(api), checks=CHECKS).status_code
        statuses[status] = statuses.get(status, 0) + 1
    assert any(200 <= s < 300 for s in statuses), statuses


@pytest.mark.parametrize("label", [op.label for op in OPERATIONS if any(p.name == "hold_id" for p in op.path_params)])
def test_schemathesis_on_an_open_hold(api: Service, schema: OpenApiSchema, label: str) -> None:
    api.client.simulate_post(f"/api/v1/admin/users/{FUNDED}/wallet/grant", headers=_admin(api),
                             json={"credits": "1000.00", "reason": "fuel for a hold"})
    placed = api.client.simulate_post(
        f"/api/v1/admin/users/{FUNDED}/wallet/holds", json={"credits": "500.00", "reason": "generated"},
        headers={**_admin(api), "Idempotency-Key": f"openapi-{BY_LABEL[label].operation_id}"},
    )
    assert placed.status_code == 201, placed.text
    statuses = _run(schema, label, _admin(api), GenerationMode.POSITIVE,
                    path_parameters={"hold_id": placed.json["hold_id"]})
    assert any(200 <= s < 300 for s in statuses), statuses
