from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST

from itemflow.api.deps import reading
from itemflow.api.problems import AUTH_ERRORS, problem_responses
from itemflow.auth.deps import access
from itemflow.observability import metrics

router = APIRouter(tags=["observability"], responses=problem_responses(*AUTH_ERRORS))


@router.get("/metrics", dependencies=access("metrics"), summary="Prometheus metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def get_metrics(request: Request) -> Response:
    async with reading(request) as session:
        body = await metrics.render(session)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
