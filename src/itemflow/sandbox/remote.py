"""RemoteSandbox: the HTTP client of the private code-runner service (see runner.py)."""

from __future__ import annotations

from typing import Any

import httpx

from itemflow.sandbox.base import Limits, SandboxResult, SandboxUnavailable

# The runner answers within the run's own timeout plus its backstop; allow that and the network.
NETWORK_GRACE = 15.0


class RemoteSandbox:
    def __init__(self, url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._transport = transport
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, transport=self._transport,
                                             headers={"Authorization": f"Bearer {self.token}"},
                                             timeout=httpx.Timeout(30.0, connect=5.0))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check(self) -> str | None:
        if self._client is None:
            return "sandbox not started"
        try:
            response = await self._client.get("/healthz", timeout=5.0)
        except httpx.HTTPError as exc:
            return f"code runner at {self.url} unreachable: {exc!r}"
        if response.status_code != 200:
            return f"code runner at {self.url} unhealthy: HTTP {response.status_code} {response.text[:200]}"
        return None

    async def run(self, code: str, input: dict[str, Any], limits: Limits) -> SandboxResult:
        if self._client is None:
            await self.start()
        assert self._client is not None
        body = {"code": code, "input": input, "limits": limits.to_dict()}
        try:
            response = await self._client.post("/run", json=body, timeout=limits.timeout_seconds + NETWORK_GRACE)
        except httpx.HTTPError as exc:
            raise SandboxUnavailable(f"code runner at {self.url} unreachable: {exc!r}") from exc
        if response.status_code == 401:
            raise SandboxUnavailable(f"code runner at {self.url} refused the token (HTTP 401)")
        if response.status_code == 503:
            raise SandboxUnavailable(f"code runner at {self.url} cannot sandbox: {response.text[:500]}")
        response.raise_for_status()
        return SandboxResult.from_dict(response.json())
