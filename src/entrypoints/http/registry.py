"""What a route is: one `Operation` per path and method, declaring who may call it, its path, query and
header parameters, its request body schema and its responses. `routes.add_routes` mounts the Falcon
resources from these declarations and enforces them (auth, path ids, query names, body schema) before
the handler runs; `openapi.document` describes the very same declarations. Nothing is kept twice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import falcon

from entrypoints.http import schemas
from entrypoints.http.schemas import Schema
from wallet_core.errors import InvalidInput

if TYPE_CHECKING:
    from entrypoints.http.auth import Principal
    from wallet_core.service import Wallet
    from wallet_core.use_cases import GrantResult, WebhookOutcome


@dataclass(frozen=True)
class Access:
    """Who may call: anyone (`public`), any valid bearer token, or a token with one of `roles`.
    `security` names the OpenAPI security scheme that proves it (a public route may still check one,
    as the Stripe webhook checks Stripe's signature)."""

    public: bool = False
    roles: tuple[str, ...] = ()
    security: str = "bearerAuth"


PUBLIC = Access(public=True, security="")
ANY_USER = Access()
STRIPE_SIGNED = Access(public=True, security="stripeSignature")


@dataclass(frozen=True)
class Param:
    name: str
    schema: Schema
    description: str = ""
    required: bool = False

    def check(self, value: str) -> str:
        """Path ids must match their pattern before anything reads them (422 naming the parameter)."""
        pattern = self.schema.get("pattern")
        if pattern is not None and not re.fullmatch(pattern, value):
            raise InvalidInput(self.name, f"is invalid: {self.schema.get('description', '')}".rstrip(": "))
        return value


@dataclass(frozen=True)
class Body:
    """A request body. `raw` bodies (the Stripe webhook) reach the handler as bytes, unparsed: the
    signature is over the exact bytes; `schema` then only documents them."""

    schema: Schema
    required: bool = True
    raw: bool = False
    media_type: str = falcon.MEDIA_JSON


@dataclass(frozen=True)
class Reply:
    description: str
    schema: Schema | None = None
    media_type: str = falcon.MEDIA_JSON
    headers: Mapping[str, str] = field(default_factory=dict)  # name -> description


class BusinessEvents(Protocol):
    """Where a handler reports what its use case did, for the metrics (entrypoints.http.observability):
    counted from the use case's result, never read back from the answer's JSON."""

    def webhook_applied(self, outcome: WebhookOutcome) -> None: ...

    def admin_grant(self, result: GrantResult) -> None: ...


@dataclass
class Call:
    """What a handler gets: the request as checked against its Operation."""

    req: falcon.Request
    resp: falcon.Response
    wallet: Wallet
    events: BusinessEvents
    principal: Principal | None
    path: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]
    raw: bytes = b""

    @property
    def user(self) -> Principal:
        assert self.principal is not None, "an operation with a token"
        return self.principal

    def header(self, name: str) -> str | None:
        return self.req.get_header(name)

    def reply(self, media: object, status: int = 200) -> None:
        self.resp.status = status
        self.resp.media = media


Handler = Callable[[Call], None]


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    operation_id: str
    summary: str
    tag: str
    handler: Handler | None  # None: mounted by another module (see `mounted_by`), only described here
    access: Access
    responses: Mapping[int, Reply]
    description: str = ""
    path_params: tuple[Param, ...] = ()
    query: tuple[Param, ...] = ()
    headers: tuple[Param, ...] = ()
    body: Body | None = None
    mounted_by: str = ""

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"

    def all_responses(self) -> dict[int, Reply]:
        """The declared responses plus the ones every operation of its kind can give."""
        found: dict[int, Reply] = {}
        if self.body is not None:
            if self.body.raw:
                found[413] = Reply("The body is over 64 KiB.", schemas.ERROR)
            else:
                found[400] = Reply("The body is not valid JSON (NaN and Infinity included), or is missing.",
                                   schemas.ERROR)
                found[413] = Reply("The body is over 64 KiB.", schemas.ERROR)
                found[422] = Reply("A field is missing, unknown, of the wrong JSON type or has an invalid "
                                   "value.", schemas.ERROR)
            found[415] = Reply("The Content-Type is not application/json.", schemas.ERROR)
        if self.path_params:
            found[404] = Reply("No such route or resource.", schemas.ERROR)
            found[422] = found.get(422) or Reply("A path id or parameter is invalid.", schemas.ERROR)
        if self.query:
            found[422] = found.get(422) or Reply("An unknown, repeated or invalid query parameter.", schemas.ERROR)
        if any(h.name == "Idempotency-Key" for h in self.headers):
            found[422] = found.get(422) or Reply("The Idempotency-Key is invalid.", schemas.ERROR)
        if not self.access.public:
            found[401] = Reply("No bearer token, or it is expired, malformed or not signed with the "
                               "service's secret.", schemas.ERROR,
                               headers={"WWW-Authenticate": "Bearer"})
            found[503] = Reply("Authentication is not configured, or the database is unavailable "
                               "(nothing was written; retry).", schemas.ERROR,
                               headers={"Retry-After": "Seconds to wait before retrying."})
        if self.access.roles:
            found[403] = Reply(f"The token lacks the {' or '.join(self.access.roles)} role.", schemas.ERROR)
        found.update(self.responses)
        return found


def error(description: str) -> Reply:
    return Reply(description, schemas.ERROR)


UNAVAILABLE = Reply("The database is unavailable or a setting is missing; nothing was written. Retry "
                    "later.", schemas.ERROR, headers={"Retry-After": "Seconds to wait before retrying."})

IDEMPOTENCY_KEY = Param("Idempotency-Key", schemas.IDEMPOTENCY_KEY,
                        "Makes a retry safe: the same key and request answer the first result (200).")
IDEMPOTENCY_KEY_REQUIRED = Param("Idempotency-Key", schemas.IDEMPOTENCY_KEY,
                                 "Required: a retry after a timeout must never move credits twice.", required=True)
USER_ID = Param("user_id", schemas.USER_ID, "The user whose wallet this is.", required=True)
HOLD_ID = Param("hold_id", schemas.HOLD_ID, "The hold, as placing it answered.", required=True)
TRANSACTION_ID = Param("transaction_id", schemas.TRANSACTION_ID, "The transaction, as an answer or the history "
                       "gave its id.", required=True)
SETUP_INTENT_ID = Param("setup_intent_id", schemas.SETUP_INTENT_ID, "The SetupIntent, as starting the setup answered.",
                        required=True)
PAYMENT_INTENT_ID = Param("payment_intent_id", schemas.PAYMENT_INTENT_ID, "Stripe's PaymentIntent id.",
                          required=True)
