"""The compute API application: ``create_app(runtime)``.

Layout of the URL space:

- ``/``                 the version document list (no auth, no microversion)
- ``/v2.1`` ``/v2.1/``  the v2.1 version document
- ``/v2.1/...``         every router of ``atoll.api.routers.ROUTERS``
- ``/v2.1/{project_id}/...``  the legacy form with the project in the URL; it is
  rewritten to ``/v2.1/...`` and the project must be the caller's (400 otherwise)
- ``/placement/...``    the Placement API read endpoints (``atoll.placement.router``)

``ApiMiddleware`` runs around every request: it gives the request its id
(``req-<uuid>``, ``request.state.request_id``, echoed as
``x-openstack-request-id`` and ``x-compute-request-id`` and used as the
context's ``request_id``), parses the microversion into
``request.state.api_version`` (400/406 straight away when it is bad) and echoes
it with the ``Vary`` header, and turns any exception nothing else handled into
a logged 500 computeFault.  Error handlers are in ``atoll.api.errors``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import Depends, FastAPI
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atoll.api import auth, errors, policy
from atoll.api.deps import get_context
from atoll.api.links import API_PREFIX
from atoll.api.microversion import from_headers, response_headers
from atoll.context import new_request_id
from atoll.exceptions import AtollError
from atoll.placement.router import router as placement_router
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)

PLACEMENT_PREFIX = "/placement"
UNVERSIONED_PATHS = frozenset({"/", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})

_PARAM = re.compile(r"^\{.*\}$")


class ApiMiddleware:
    """Request ids, microversion negotiation, legacy project URLs and the last-resort 500."""

    def __init__(self, app: ASGIApp, collections: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.collections = collections

    def _strip_project(self, scope: Scope) -> str | None:
        """Rewrite /v2.1/<project>/<collection>... to /v2.1/<collection>...; the project."""
        path: str = scope["path"]
        prefix = API_PREFIX + "/"
        if not path.startswith(prefix):
            return None
        parts = path[len(prefix) :].split("/", 2)
        if len(parts) < 2:
            return None
        known = self.collections
        if parts[0] in known or parts[1] not in known:
            return None
        new_path = prefix + "/".join(parts[1:])
        scope["path"] = new_path
        scope["raw_path"] = new_path.encode()
        return parts[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        request_id = new_request_id()
        state["request_id"] = request_id
        extra: dict[str, str] = {
            "x-openstack-request-id": request_id,
            "x-compute-request-id": request_id,
        }
        path: str = scope["path"]
        if not path.startswith(PLACEMENT_PREFIX) and path not in UNVERSIONED_PATHS:
            project = self._strip_project(scope)
            if project:
                state["url_project_id"] = project
            try:
                version = from_headers(Headers(scope=scope))
            except AtollError as exc:
                response = errors.error_response(
                    Request(scope), exc.code, exc.message, exc.title, headers=extra
                )
                await response(scope, receive, send)
                return
            state["api_version"] = version
            extra.update(response_headers(version))

        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = MutableHeaders(scope=message)
                for key, value in extra.items():
                    headers[key] = value
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception as exc:
            if started:
                LOG.exception("Error after the response to %s started", path)
                raise
            response = errors.unexpected_error_response(Request(scope), exc)
            await response(scope, receive, send_with_headers)


def _collections(routers: list[Any]) -> frozenset[str]:
    """The first path segments the routers use (flavors, servers, os-services, ...)."""
    found: set[str] = set()

    def walk(routes: list[Any], prefix: str) -> None:
        for route in routes:
            path = getattr(route, "path", None)
            if isinstance(path, str):
                first = (prefix + path).lstrip("/").split("/", 1)[0]
                if first and not _PARAM.match(first):
                    found.add(first)
            inner = getattr(route, "original_router", None)
            if inner is not None:
                context = getattr(route, "include_context", None)
                walk(inner.routes, prefix + str(getattr(context, "prefix", "") or ""))

    for router in routers:
        walk(router.routes, str(getattr(router, "prefix", "") or ""))
    return frozenset(found)


def _placement_reader(request: Request) -> None:
    """Placement's data is operator data: reading it needs the admin rule."""
    policy.authorize(get_context(request), "placement:read")


def create_app(runtime: Runtime) -> FastAPI:
    """The compute API (and the Placement read API) of ``runtime``."""
    from atoll.api.routers import ROOT_ROUTERS, ROUTERS

    auth.check_mode(runtime.settings)
    policy.init(runtime.settings.policy_file)

    app = FastAPI(
        title="atoll compute API",
        version="2.1",
        description="OpenStack Compute API v2.1 with microversions, served by atoll.",
    )
    app.state.runtime = runtime
    app.state.placement = runtime.placement
    errors.install(app)

    for router in ROOT_ROUTERS:
        app.include_router(router)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(
        placement_router, prefix=PLACEMENT_PREFIX, dependencies=[Depends(_placement_reader)]
    )

    app.add_middleware(ApiMiddleware, collections=_collections(ROUTERS))
    return app
