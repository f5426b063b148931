"""Serve the REST app with waitress."""

from __future__ import annotations

import logging

import waitress

from entrypoints.container import Container, migrate_if_embedded
from entrypoints.http.app import create_app
from entrypoints.http.body import MAX_BODY_BYTES

log = logging.getLogger("wallet.server")


def serve(container: Container, host: str = "127.0.0.1", port: int = 8000, threads: int = 8) -> None:
    settings = container.settings()
    migrate_if_embedded(container)
    log.info("wallet serving on http://%s:%s (%r)", host, port, settings)
    app = create_app(container)
    try:
        waitress.serve(
            app,
            host=host,
            port=port,
            threads=threads,
            max_request_body_size=MAX_BODY_BYTES + 1024,
            ident="wallet",
        )
    finally:
        container.shutdown_resources()
