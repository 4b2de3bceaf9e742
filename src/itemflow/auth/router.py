from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response, status

from itemflow.api import problems
from itemflow.api.deps import Pagination, id_path, reading, writing
from itemflow.api.problems import COMMON_ERRORS, problem_responses
from itemflow.auth import service
from itemflow.auth.deps import AuthRuntime, CurrentPrincipal, access, get_auth, token_rate_limit
from itemflow.auth.schemas import KeyCreate, KeyCreated, KeyRead, Me, Token, TokenRequest, UserCreate, UserRead
from itemflow.pagination import Page

AUTH_ERRORS = problem_responses(*problems.AUTH_ERRORS)
router = APIRouter(tags=["access"], responses={**problem_responses(*COMMON_ERRORS), **AUTH_ERRORS})
admin = access("admin")
Auth = Annotated[AuthRuntime, Depends(get_auth)]
KeyId = Annotated[int, id_path("API key")]
UserId = Annotated[int, id_path("user")]


@router.post("/keys", status_code=status.HTTP_201_CREATED, dependencies=admin,
             summary="Create an API key (the key is in this response only)")
async def create_key(data: KeyCreate, request: Request, principal: CurrentPrincipal,
                     auth: Auth, response: Response) -> KeyCreated:
    async with writing(request) as session:
        created = await service.create_key(session, data, principal, auth.keys)
    response.headers["Cache-Control"] = "no-store"
    return created


@router.get("/keys", dependencies=admin, summary="API keys not revoked (never their secret)")
async def list_keys(request: Request, page: Pagination) -> Page[KeyRead]:
    async with reading(request) as session:
        return await service.list_keys(session, page)


@router.delete("/keys/{key_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=admin,
               responses=problem_responses(404), summary="Revoke an API key, at once")
async def revoke_key(key_id: KeyId, request: Request) -> None:
    async with writing(request) as session:
        await service.revoke_key(session, key_id)


@router.post("/users", status_code=status.HTTP_201_CREATED, dependencies=admin,
             responses=problem_responses(409))
async def create_user(data: UserCreate, request: Request, principal: CurrentPrincipal) -> UserRead:
    async with writing(request) as session:
        return await service.create_user(session, data, principal)


@router.get("/users", dependencies=admin)
async def list_users(request: Request, page: Pagination) -> Page[UserRead]:
    async with reading(request) as session:
        return await service.list_users(session, page)


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT, dependencies=admin,
               responses=problem_responses(404), summary="Delete a user; their tokens stop working")
async def delete_user(user_id: UserId, request: Request) -> None:
    async with writing(request) as session:
        await service.delete_user(session, user_id)


_oauth_error = {"description": "RFC 6749 error: `{\"error\": \"invalid_grant\", \"error_description\": ...}`",
                "content": {"application/json": {"schema": {
                    "type": "object", "required": ["error"],
                    "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}}}}}


@router.post("/auth/token", dependencies=[Depends(token_rate_limit)],
             summary="OAuth 2.0 password grant: a short-lived access token (JWT)",
             responses={400: _oauth_error, 401: _oauth_error, **problem_responses(429)})
async def token(
    request: Request, auth: Auth, response: Response,
    grant_type: Annotated[str | None, Form()] = None,
    username: Annotated[str | None, Form()] = None,
    password: Annotated[str | None, Form()] = None,
    scope: Annotated[str, Form(description="Space-separated scopes; default: all the user's.")] = "",
) -> Token:
    form = TokenRequest(grant_type=grant_type, username=username, password=password, scope=scope)
    async with reading(request) as session:
        issued = await service.issue_token(session, form, auth.keys, auth.token_ttl)
    response.headers["Cache-Control"] = "no-store"
    return issued


@router.get("/auth/me", dependencies=access(), summary="Who the credential is, and its scopes")
async def me(principal: CurrentPrincipal) -> Me:
    return Me(kind=principal.kind, id=principal.id, name=principal.name, scopes=sorted(principal.scopes))
