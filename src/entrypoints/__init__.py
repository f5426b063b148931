"""Entrypoints: the composition root, the REST app, the server, the CLI and the library facade."""
