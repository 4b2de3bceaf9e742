"""Settings: read from ITEMFLOW_* environment variables (and .env) once, at start-up."""

from __future__ import annotations

import secrets
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
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
    log_level: str = "info"

    secret_key: SecretStr | None = None
    redis_url: str | None = None
    trusted_proxies: list[str] = Field(default_factory=list)

    embedded_worker: bool = True
    sandbox_url: str | None = None
    runner_token: SecretStr | None = None
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
