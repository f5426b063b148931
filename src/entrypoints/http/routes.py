"""Every route of the REST app, and the one place that mounts them on Falcon and enforces what each
declares: the token (401/403), path ids (422), query parameter names (422) and the request body (400,
413, 415, 422 against its schema) are checked, in that order, before the handler runs. /openapi.json
and /docs describe this same list (entrypoints.http.openapi)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import falcon

from entrypoints.http import (
    admin_routes,
    auto_top_up_routes,
    events_routes,
    openapi,
    schemas,
    spend_routes,
    wallet_routes,
    webhook_routes,
)
from entrypoints.http.auth import JwtAuthenticator, Principal
from entrypoints.http.body import read_object, read_query, read_raw
from entrypoints.http.registry import PUBLIC, UNAVAILABLE, BusinessEvents, Call, Operation, Reply
from wallet_core.service import Wallet


def health(call: Call) -> None:
    call.reply({"status": "ok"})


def openapi_json(call: Call) -> None:
    call.resp.data = openapi_bytes()
    call.resp.content_type = falcon.MEDIA_JSON


def docs(call: Call) -> None:
    call.resp.text = docs_html()
    call.resp.content_type = falcon.MEDIA_HTML


def swagger_ui(call: Call) -> None:
    call.resp.text = swagger_ui_html()
    call.resp.content_type = falcon.MEDIA_HTML


META = (
    Operation("GET", "/healthz", "health", "Is the process up", "operations", health, PUBLIC,
              description="Answers while the process runs; says nothing about the database (see /readyz).",
              responses={200: Reply("Up.", schemas.HEALTH)}),
    Operation("GET", "/readyz", "ready", "Can it do its work", "operations", None, PUBLIC,
              mounted_by="entrypoints.http.observability",
              description="200 when the database answers quickly and its schema is this version's, else 503 "
                          "saying why (e.g. run `wallet migrate`).",
              responses={200: Reply("Ready.", schemas.READY), 503: UNAVAILABLE}),
    Operation("GET", "/metrics", "metrics", "Prometheus metrics", "operations", None, PUBLIC,
              mounted_by="entrypoints.http.observability",
              description="Request counts and durations by route template, grants and webhook outcomes, in "
              "the Prometheus text format.",
              responses={200: Reply("The metrics.", schemas.TEXT, media_type="text/plain")}),
    Operation("GET", "/openapi.json", "openapi", "This API, as OpenAPI 3.1", "operations", openapi_json, PUBLIC,
              responses={200: Reply("The OpenAPI document.", schemas.OPENAPI_DOCUMENT)}),
    Operation("GET", "/docs", "docs", "This API, as a page to read", "operations", docs, PUBLIC,
              responses={200: Reply("An HTML page listing every route with its schemas.", schemas.TEXT,
                                    media_type=falcon.MEDIA_HTML)}),
    Operation("GET", openapi.SWAGGER_UI_PATH, "swagger_ui", "This API, to try in a browser (Swagger UI)",
              "operations", swagger_ui, PUBLIC,
              description="Swagger UI over /openapi.json; its scripts and styles are served by this app under "
              f"{openapi.SWAGGER_UI_FILES}/ (no CDN). Paste a token under Authorize to try the routes.",
              responses={200: Reply("The Swagger UI page.", schemas.TEXT, media_type=falcon.MEDIA_HTML)}),
)

OPERATIONS: tuple[Operation, ...] = (
    *wallet_routes.OPERATIONS,
    *webhook_routes.OPERATIONS,
    *admin_routes.OPERATIONS,
    *spend_routes.OPERATIONS,
    *events_routes.OPERATIONS,
    *auto_top_up_routes.OPERATIONS,
    *META,
)


@cache
def openapi_document() -> dict[str, Any]:
    return openapi.document(OPERATIONS)


@cache
def openapi_bytes() -> bytes:
    return json.dumps(openapi_document(), indent=1).encode()


@cache
def docs_html() -> str:
    return openapi.docs_page(openapi_document())


@cache
def swagger_ui_html() -> str:
    return openapi.swagger_ui_page()


class Endpoint:
    """The Falcon resource of one path: a responder per declared method, each running `serve`."""

    def __init__(self, operations: Iterable[Operation], wallet: Wallet, auth: JwtAuthenticator,
                 events: BusinessEvents) -> None:
        self._wallet = wallet
        self._auth = auth
        self._events = events
        for op in operations:
            setattr(self, f"on_{op.method.lower()}", self._responder(op))

    def _responder(self, op: Operation) -> Callable[..., None]:
        def responder(req: falcon.Request, resp: falcon.Response, **params: str) -> None:
            self.serve(op, req, resp, params)

        responder.__name__ = f"on_{op.method.lower()}"
        return responder

    def _principal(self, op: Operation, req: falcon.Request) -> Principal | None:
        if op.access.public:
            return None
        if op.access.roles:
            return self._auth.require_any_role(req, *op.access.roles)
        return self._auth.authenticate(req)

    def serve(self, op: Operation, req: falcon.Request, resp: falcon.Response, params: dict[str, str]) -> None:
        assert op.handler is not None
        principal = self._principal(op, req)
        path = {p.name: p.check(params[p.name]) for p in op.path_params}
        # Public routes (health probes, Stripe) ignore query strings a load balancer or an endpoint
        # URL may carry; every other route refuses parameters it does not declare.
        query = read_query(req, {q.name for q in op.query}) if op.query or not op.access.public else {}
        body: dict[str, Any] = {}
        raw = b""
        if op.body is not None:
            if op.body.raw:
                raw = read_raw(req)
            else:
                body = read_object(req, op.body.schema, optional=not op.body.required, max_bytes=op.body.max_bytes)
        op.handler(Call(req, resp, self._wallet, self._events, principal, path, query, body, raw))


def add_routes(app: falcon.App[falcon.Request, falcon.Response], wallet: Wallet, auth: JwtAuthenticator,
               events: BusinessEvents) -> None:
    """Mount every operation that has a handler here (the others are mounted by `mounted_by`); the
    handlers report what their use cases did to `events`."""
    by_path: dict[str, list[Operation]] = {}
    for op in OPERATIONS:
        if op.handler is not None:
            by_path.setdefault(op.path, []).append(op)
    for path, operations in by_path.items():
        app.add_route(path, Endpoint(operations, wallet, auth, events))
    app.add_static_route(openapi.SWAGGER_UI_FILES, openapi.swagger_ui_directory())  # Swagger UI's own files
