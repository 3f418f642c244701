"""The API's OpenAPI 3.1 document, as served at ``/openapi.json``.

Generated from the endpoint table and its pydantic models
(:mod:`suture.server.http.openapi`); nothing in it is written by hand.
"""

from __future__ import annotations

from suture.server.http.app import document

__all__ = ["document"]
