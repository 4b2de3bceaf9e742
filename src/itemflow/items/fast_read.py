"""GET /items/{id}, the hottest route, answered without FastAPI's per-request machinery.

Through FastAPI an authenticated item read costs about 200 µs of CPU in-process, of which the
work (authenticate, rate limit, read, serialise) is about 40 µs: the rest is routing through
the included routers and solving dependencies (bench/README.md has the measurements). This
pure ASGI middleware answers exactly the well-formed requests of that route, and only by
calling what the route and its guard call: `admit` (auth/deps.py), `read_item` and the route's
own response model. Anything else (another path or method, an id FastAPI has to validate)
goes to FastAPI untouched; errors go through the app's own exception handlers, so a 401, 403,
404 or 429 is the same problem+json. tests/api/test_fast_read.py holds both ways of answering
to the same bytes.
"""

from __future__ import annotations

import re

from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from itemflow.api.problems import error_response
from itemflow.auth.deps import admit, bearer_token, guard
from itemflow.items import service
from itemflow.items.router import get_item
from itemflow.items.router import router as items_router

# Up to 18 digits, no leading zero: always an id FastAPI would accept (1 to 2**63 - 1) and
# would read as the same number. Other spellings ("01", 19 digits) are FastAPI's to judge.
_PATH = re.compile(r"/items/([1-9][0-9]{0,17})")


def _route_of(endpoint: object) -> APIRoute:
    return next(r for r in items_router.routes if isinstance(r, APIRoute) and r.endpoint is endpoint)


class FastItemRead:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route = _route_of(get_item)
        # The scopes the route declares for its guard, so the two cannot drift apart.
        self.scopes = [s for d in self.route.dependencies if d.dependency is guard for s in d.scopes]
        self.serializer = TypeAdapter(self.route.response_model)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "GET" or scope.get("root_path")
                or (match := _PATH.fullmatch(scope["path"])) is None):
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route  # as FastAPI's routing would set it (metrics label by it)
        state = scope["app"].state
        limit_headers: dict[str, str] = {}
        try:
            token = bearer_token(_header(scope, b"authorization"))
            _, limit_headers = await admit(state.auth, state.rate_limiter, token, self.scopes, "GET")
            item = await service.read_item(state.database, int(match[1]))
        except Exception as exc:
            request = Request(scope, receive)
            if limit_headers:  # the request was counted: its error says so, as on the route
                request.state.rate_limit_headers = limit_headers
            response = await error_response(request, exc)
        else:
            response = Response(self.serializer.dump_json(item, by_alias=True),
                                media_type="application/json", headers=limit_headers)
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
