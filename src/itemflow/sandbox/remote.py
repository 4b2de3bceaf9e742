"""RemoteSandbox: the HTTP client of the private code-runner service (see runner.py)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from itemflow.sandbox.base import Limits, SandboxResult, SandboxUnavailable

# The runner answers within the run's own timeout plus its backstop; allow that and the network.
NETWORK_GRACE = 15.0
METADATA_URL = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity"
ID_TOKEN_REUSE_SECONDS = 45 * 60


class RemoteSandbox:
    def __init__(self, url: str, token: str, *, transport: httpx.AsyncBaseTransport | None = None,
                 google_id_token: bool = False, metadata_url: str = METADATA_URL) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        # On Cloud Run the runner only admits callers with an ID token for its URL (IAM); it
        # travels in X-Serverless-Authorization, leaving Authorization to the runner token.
        self._google_id_token = google_id_token
        self._metadata_url = metadata_url
        self._id_token: tuple[str, float] | None = None

    async def _iam_headers(self) -> dict[str, str]:
        if not self._google_id_token:
            return {}
        now = time.monotonic()
        if self._id_token is None or self._id_token[1] < now:
            assert self._client is not None
            try:
                r = await self._client.get(self._metadata_url, params={"audience": self.url},
                                           headers={"Metadata-Flavor": "Google"}, timeout=5.0)
                r.raise_for_status()
            except httpx.HTTPError as exc:
                raise SandboxUnavailable(f"cannot get an ID token for {self.url}: {exc!r}",
                                         transient=True) from exc
            # Google ID tokens live an hour; take a fresh one well before that.
            self._id_token = (r.text.strip(), now + ID_TOKEN_REUSE_SECONDS)
        return {"X-Serverless-Authorization": f"Bearer {self._id_token[0]}"}

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
            response = await self._client.get("/healthz", headers=await self._iam_headers(), timeout=5.0)
        except (httpx.HTTPError, SandboxUnavailable) as exc:
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
            response = await self._client.post("/run", json=body, headers=await self._iam_headers(),
                                               timeout=limits.timeout_seconds + NETWORK_GRACE)
        except httpx.HTTPError as exc:
            raise SandboxUnavailable(f"code runner at {self.url} unreachable: {exc!r}", transient=True) from exc
        if response.status_code == 401:
            raise SandboxUnavailable(f"code runner at {self.url} refused the token (HTTP 401)")
        if response.status_code == 503:
            raise SandboxUnavailable(f"code runner at {self.url} cannot sandbox: {response.text[:500]}")
        if response.status_code >= 500:
            raise SandboxUnavailable(f"code runner at {self.url} failed: HTTP {response.status_code}",
                                     transient=True)
        response.raise_for_status()
        return SandboxResult.from_dict(response.json())
