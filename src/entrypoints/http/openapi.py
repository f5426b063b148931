"""The OpenAPI 3.1 document and the /docs page, both built from the route declarations
(entrypoints.http.registry) and their schemas (entrypoints.http.schemas): nothing here is written by
hand per route, so the document cannot drift from what the app checks and answers. /docs/ui is
Swagger UI (swagger-ui-py's page and bundled files, no CDN) over that same /openapi.json."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from entrypoints.http import schemas
from entrypoints.http.registry import Operation, Param, Reply

TITLE = "wallet"
DESCRIPTION = (
    "Prepaid credits bought with Stripe, granted exactly once, kept in an auditable ledger. Amounts are "
    "decimal strings with two places; JSON numbers are read exactly, never as floats. Errors are JSON "
    "`{title, description}`; a 4xx writes nothing."
)
TAGS = {
    "wallet": "The token's own wallet.",
    "stripe": "Stripe's webhook.",
    "admin": "For admins.",
    "spending": "For back ends with the service role, and admins.",
    "events": "For admins: outbound events, webhook endpoints and their deliveries, balance alerts (docs/events.md).",
    "operations": "Probes, metrics and this documentation.",
}
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "An HS256 JWT signed with WALLET_JWT_SECRET: `sub` is the user, `exp` is required, "
        "`roles` may hold `admin` and `service`. `wallet token USER [--admin] [--service]` mints one.",
    },
    "stripeSignature": {
        "type": "apiKey",
        "in": "header",
        "name": "Stripe-Signature",
        "description": "Stripe signs each webhook body with the endpoint's secret (STRIPE_WEBHOOK_SECRET).",
    },
}


def _version() -> str:
    try:
        return metadata.version("wallet")
    except metadata.PackageNotFoundError:
        return "0"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _names() -> dict[int, str]:
    return {id(schema): name for name, schema in schemas.NAMED.items()}


def render(schema: Any, names: dict[int, str], *, top: bool = True) -> Any:
    """A copy of `schema` where every named schema (but a component's own root) is a $ref."""
    if isinstance(schema, dict):
        if not top and id(schema) in names:
            return _ref(names[id(schema)])
        return {key: render(value, names, top=False) for key, value in schema.items()}
    if isinstance(schema, list):
        return [render(item, names, top=False) for item in schema]
    return schema


def _parameter(param: Param, where: str, names: dict[int, str]) -> dict[str, Any]:
    return {
        "name": param.name,
        "in": where,
        "required": where == "path" or param.required,
        "description": param.description,
        "schema": render(param.schema, names, top=False),
    }


def _reply(reply: Reply, names: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"description": reply.description}
    if reply.schema is not None:
        out["content"] = {reply.media_type: {"schema": render(reply.schema, names, top=False)}}
    if reply.headers:
        out["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in reply.headers.items()
        }
    return out


def _who(op: Operation) -> str:
    if op.access.security == "stripeSignature":
        return "Stripe (signed)"
    if op.access.public:
        return "anyone"
    return " or ".join(op.access.roles) if op.access.roles else "any user with a token"


def _operation(op: Operation, names: dict[int, str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": (op.description + f"\n\nWho: {_who(op)}.").strip(),
        "tags": [op.tag],
        "security": [{op.access.security: []}] if op.access.security else [],
        "x-roles": list(op.access.roles),
    }
    parameters = [
        *(_parameter(p, "path", names) for p in op.path_params),
        *(_parameter(p, "query", names) for p in op.query),
        *(_parameter(p, "header", names) for p in op.headers),
    ]
    if parameters:
        out["parameters"] = parameters
    if op.body is not None:
        out["requestBody"] = {
            "required": op.body.required,
            "content": {op.body.media_type: {"schema": render(op.body.schema, names, top=False)}},
        }
    out["responses"] = {str(code): _reply(reply, names) for code, reply in sorted(op.all_responses().items())}
    return out


def document(operations: Iterable[Operation]) -> dict[str, Any]:
    names = _names()
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, names)
    return {
        "openapi": "3.1.0",
        "info": {"title": TITLE, "version": _version(), "description": DESCRIPTION},
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": {name: render(schema, names) for name, schema in schemas.NAMED.items()},
            "securitySchemes": SECURITY_SCHEMES,
        },
    }


# -- the /docs page -------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 72rem; padding: 1rem 2rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2.5rem; border-bottom: 1px solid #ccc; }
section.op { border: 1px solid #ddd; border-radius: 6px; margin: 1rem 0; padding: 0.6rem 1rem; }
.method { font: bold 13px monospace; padding: 2px 8px; border-radius: 4px; color: #fff; background: #2b6cb0; }
.method.post { background: #2f855a; } code, pre { font-family: ui-monospace, monospace; font-size: 13px; }
pre { background: #f6f8fa; padding: 0.6rem; overflow-x: auto; border-radius: 4px; }
table { border-collapse: collapse; margin: 0.4rem 0; } td, th { border: 1px solid #ddd; padding: 3px 8px;
text-align: left; vertical-align: top; } nav a { margin-right: 1rem; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _schema_html(schema: Any) -> str:
    if isinstance(schema, dict) and set(schema) == {"$ref"}:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f'<a href="#schema-{_e(name)}"><code>{_e(name)}</code></a>'
    return f"<pre>{_e(json.dumps(schema, indent=2, ensure_ascii=False))}</pre>"


def _op_html(path: str, method: str, op: dict[str, Any]) -> str:
    parts = [
        f'<section class="op" id="{_e(op["operationId"])}">',
        f'<h3><span class="method {_e(method)}">{_e(method.upper())}</span> <code>{_e(path)}</code> '
        f"&mdash; {_e(op['summary'])}</h3>",
        f"<p>{_e(op['description'])}</p>",
    ]
    if op.get("security"):
        parts.append(f"<p>Security: <code>{_e(', '.join(k for s in op['security'] for k in s))}</code></p>")
    if op.get("parameters"):
        rows = "".join(
            f"<tr><td><code>{_e(p['name'])}</code></td><td>{_e(p['in'])}</td>"
            f"<td>{'yes' if p['required'] else 'no'}</td><td>{_e(p['description'])}</td>"
            f"<td>{_schema_html(p['schema'])}</td></tr>"
            for p in op["parameters"]
        )
        parts.append("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>required</th>"
                     f"<th>description</th><th>schema</th></tr>{rows}</table>")
    if "requestBody" in op:
        body = op["requestBody"]
        for media, content in body["content"].items():
            parts.append(f"<h4>Request body ({_e(media)}{', required' if body['required'] else ', optional'})"
                         f"</h4>{_schema_html(content['schema'])}")
    replies: list[str] = []
    for status, reply in op["responses"].items():
        content = reply.get("content", {})
        shown = "".join(f"<code>{_e(m)}</code> {_schema_html(c['schema'])}" for m, c in content.items())
        replies.append(f"<tr><td>{_e(status)}</td><td>{_e(reply['description'])}</td><td>{shown}</td></tr>")
    parts.append("<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>body</th></tr>"
                 f"{''.join(replies)}</table></section>")
    return "".join(parts)


def docs_page(doc: dict[str, Any]) -> str:
    """A self-contained HTML page (no script, no stylesheet or font from elsewhere) of `doc`."""
    info = doc["info"]
    ops = [(path, method, op) for path, methods in doc["paths"].items() for method, op in methods.items()]
    by_tag: dict[str, list[str]] = {}
    for path, method, op in ops:
        by_tag.setdefault(op["tags"][0], []).append(_op_html(path, method, op))
    sections = "".join(
        f'<h2 id="tag-{_e(tag["name"])}">{_e(tag["name"])}</h2><p>{_e(tag["description"])}</p>'
        + "".join(by_tag.get(tag["name"], []))
        for tag in doc["tags"]
    )
    index = "".join(
        f'<li><a href="#{_e(op["operationId"])}"><code>{_e(method.upper())} {_e(path)}</code></a> '
        f"{_e(op['summary'])}</li>"
        for path, method, op in ops
    )
    components = "".join(
        f'<h3 id="schema-{_e(name)}">{_e(name)}</h3>{_schema_html(schema)}'
        for name, schema in doc["components"]["schemas"].items()
    )
    security = "".join(
        f"<li><code>{_e(name)}</code>: {_e(scheme.get('description', ''))}</li>"
        for name, scheme in doc["components"]["securitySchemes"].items()
    )
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{_e(info['title'])} API {_e(info['version'])}</title><style>{_CSS}</style></head><body>"
        f"<h1>{_e(info['title'])} API <small>{_e(info['version'])}</small></h1><p>{_e(info['description'])}</p>"
        '<nav><a href="/openapi.json">openapi.json</a><a href="#schemas">schemas</a></nav>'
        f"<h2>Routes</h2><ul>{index}</ul><h2>Authentication</h2><ul>{security}</ul>{sections}"
        f'<h2 id="schemas">Schemas</h2>{components}</body></html>'
    )


# -- /docs/ui: Swagger UI -------------------------------------------------------------------------
# /docs stays a page without scripts (readable with curl, or where scripts are blocked); /docs/ui is the
# interactive one: swagger-ui-py's page, its bundled Swagger UI files served from this process (no CDN),
# reading /openapi.json. Only its page and files are used: its Falcon handler would mount routes (a
# trailing-slash twin, a config route) that the route declarations do not name.

SWAGGER_UI_PATH = "/docs/ui"
SWAGGER_UI_FILES = f"{SWAGGER_UI_PATH}/static"


def swagger_ui_page() -> str:
    from swagger_ui.core import ApplicationDocument

    ui = ApplicationDocument(None, url_prefix=SWAGGER_UI_PATH, title=f"{TITLE} API", config_rel_url="/openapi.json")
    ui.parameters["url"] = json.dumps("/openapi.json")  # the app's own document, not one under /docs/ui
    return str(ui.doc_html)


def swagger_ui_directory() -> str:
    from swagger_ui.utils import SWAGGER_UI_PY_ROOT

    return str(SWAGGER_UI_PY_ROOT / "static")
