"""Settings: read from ITEMFLOW_* environment variables (and .env) once, at start-up."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ITEMFLOW_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    data_dir: Path = Path(".data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in data_dir."
    )
    database_pool_size: int = Field(default=10, ge=1)
    sqlite_busy_timeout_ms: int = Field(default=5000, ge=0)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The HTTP server under hostile connections (see itemflow.api.server).
    max_header_bytes: int = Field(default=64 * 1024, ge=1024, description="Larger request "
                                  "heads (request line and headers) get 431.")
    header_timeout_seconds: float = Field(default=10.0, gt=0, description="A request's head must "
                                          "be complete this long after its first byte.")
    keep_alive_timeout_seconds: float = Field(default=5.0, gt=0, description="Idle connections "
                                              "(fresh, or after a response) are closed after this.")
    log_level: str = "info"

    secret_key: SecretStr | None = None
    redis_url: str | None = None
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Proxy addresses/networks whose X-Forwarded-For is believed (JSON list).",
    )

    # Access control (see itemflow.auth).
    access_token_ttl_seconds: int = Field(default=900, ge=60, le=86400)
    bootstrap_admin: bool = Field(
        default=True, description="On start, if no admin credential exists, create an admin "
        "API key and print it once on stderr.",
    )
    # Rate limits, per principal (else per client address), in the `limits` notation.
    rate_limit_reads: str = "1200/minute"
    rate_limit_writes: str = "300/minute"
    rate_limit_automation_writes: str = "60/minute"
    rate_limit_runs: str = "60/minute"
    rate_limit_token: str = Field(default="10/minute", description="POST /auth/token, per address.")
    rate_limit_fail_open: bool = Field(
        default=True, description="If Redis is unreachable: serve without limits (true) or "
        "answer 503 (false).",
    )
    rate_limit_redis_timeout_seconds: float = Field(default=0.5, gt=0)
    rate_limit_redis_prefix: str = Field(default="itemflow-rl", min_length=1, max_length=100)

    @field_validator("rate_limit_reads", "rate_limit_writes", "rate_limit_automation_writes",
                     "rate_limit_runs", "rate_limit_token")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError as exc:
            raise ValueError(f"not a rate limit like '100/minute': {value!r}") from exc
        return value

    embedded_worker: bool = True
    sandbox_url: str | None = None
    runner_token: SecretStr | None = None
    sandbox_google_id_token: bool = Field(
        default=False, description="Send a Google ID token to the code-runner (Cloud Run IAM)."
    )
    sandbox_pool_size: int | None = Field(default=None, ge=1)
    sandbox_python: str | None = Field(
        default=None, description="System interpreter inside the sandbox; default Debian's python3."
    )
    max_attempts: int = Field(default=3, ge=1)
    worker_lease_seconds: float = Field(default=15.0, gt=0)
    worker_poll_seconds: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _production_needs_secret(self) -> Settings:
        if self.environment == "production" and self.secret_key is None:
            raise ValueError("ITEMFLOW_SECRET_KEY must be set when ITEMFLOW_ENVIRONMENT=production")
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'itemflow.db').resolve()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    def resolved_secret_key(self) -> str:
        """The configured key, or one generated once and kept in the data directory."""
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        path = self.data_dir / "secret_key"
        if not path.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(48))
        return path.read_text().strip()
