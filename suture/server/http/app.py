"""The ASGI application: the endpoint table (API and dashboard) behind the front door.

:data:`api_endpoints` is the API (documented in ``/openapi.json``); the
dashboard's pages come from :mod:`suture.server.dashboard`. The lifespan runs
:func:`suture.server.fleet.maintenance.tick` every few seconds (metrics to
the database, pruning in turn) and once more at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator
from http import HTTPStatus
from typing import Any

import anyio.to_thread
from starlette.routing import Router
from starlette.types import ASGIApp, Receive, Scope, Send

from suture.server.dashboard import ENDPOINTS as DASHBOARD
from suture.server.fleet import maintenance
from suture.server.fleet.context import Fleet
from suture.server.http import admin_routes, agent_routes, openapi, ops_routes, query_routes
from suture.server.http.middleware import Frontdoor
from suture.server.http.replies import error
from suture.server.http.routing import Endpoint, respond, routes


def api_endpoints() -> list[Endpoint]:
    """Every route of the API."""
    return [
        *agent_routes.ENDPOINTS,
        *admin_routes.ENDPOINTS,
        *query_routes.ENDPOINTS,
        *ops_routes.endpoints(document),
    ]


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document of the API (made once)."""
    return openapi.document(api_endpoints())


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    reply = error(HTTPStatus.NOT_FOUND, "not_found", f"no such path {scope['path'][:200]}")
    await respond(reply, scope, receive, send)


def build(fleet: Fleet, *, access_log: bool = True) -> ASGIApp:
    """The application of one server process."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        task = asyncio.create_task(_maintain(fleet))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            with contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(maintenance.tick, fleet)

    table = [*api_endpoints(), *DASHBOARD]
    router = Router(routes=routes(fleet, table), default=_not_found, lifespan=lifespan)
    return Frontdoor(router, fleet, access_log=access_log)


async def _maintain(fleet: Fleet) -> None:
    while True:
        await asyncio.sleep(maintenance.EVERY)
        try:
            await anyio.to_thread.run_sync(maintenance.tick, fleet)
        except Exception:  # the next tick tries again; serving goes on
            fleet.log.exception("maintenance failed")
