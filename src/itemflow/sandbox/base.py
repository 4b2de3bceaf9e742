"""The sandbox interface: what every implementation (local pool, remote runner) promises."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

MiB = 1024 * 1024

Status = Literal["succeeded", "failed", "timed_out"]


@dataclass(frozen=True)
class Limits:
    """Per-run limits. Every one is enforced by the sandbox, not by the user code's good will."""

    timeout_seconds: float = 5
    memory_mb: int = 128  # address space of each process of the run
    output_bytes: int = 65536  # per stream (stdout, stderr); the rest is dropped and flagged
    max_processes: int = 32  # processes and threads alive at once, the run's first process included
    max_file_bytes: int = 16 * MiB  # largest file the run may write
    tmp_bytes: int = 16 * MiB  # size of the private /tmp

    def __post_init__(self) -> None:
        if not self.timeout_seconds > 0:
            raise ValueError("timeout_seconds must be > 0")
        for name in ("memory_mb", "output_bytes", "max_processes", "max_file_bytes", "tmp_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


@dataclass
class SandboxResult:
    status: Status
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    result: Any = None  # the script's JSON-serialisable global `result`, if it bound one
    error: str | None = None  # why it did not succeed, in words ("timed out after 5s", "exit code 1")
    duration_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, repr=False)  # diagnostics; not part of the contract

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SandboxResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "extra"}
        return cls(**known)


class SandboxUnavailable(Exception):
    """The sandbox cannot run code on this host; the message says exactly why.

    `transient` marks a fault that may pass by itself (a code-runner that cannot be reached
    right now): the worker retries those, and fails the run at once for the others.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


@runtime_checkable
class Sandbox(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def run(self, code: str, input: dict[str, Any], limits: Limits) -> SandboxResult: ...

    async def check(self) -> str | None:
        """None when healthy, else the reason (for /readyz and `itemflow doctor`)."""
        ...
