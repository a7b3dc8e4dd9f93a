"""Thin handlers, one module per API surface; each handler is ``async (gateway, request) -> None``."""
