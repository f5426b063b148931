"""Builds the Falcon app from the container: routes, JSON handling, error mapping."""

from __future__ import annotations

import falcon

from entrypoints.container import Container
from entrypoints.http import errors
from entrypoints.http.body import json_handler
from entrypoints.http.observability import Metrics, install_observability
from entrypoints.http.routes import add_routes


def create_app(container: Container) -> falcon.App[falcon.Request, falcon.Response]:
    wallet = container.wallet()
    auth = container.authenticator()
    app = falcon.App()
    app.req_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    app.resp_options.media_handlers[falcon.MEDIA_JSON] = json_handler
    errors.install(app)

    metrics = Metrics()
    add_routes(app, wallet, auth, metrics)  # every route, as declared in entrypoints.http.routes (and /openapi.json)
    install_observability(app, container, metrics)
    return app
