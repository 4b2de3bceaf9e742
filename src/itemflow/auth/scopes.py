"""The scopes a credential can hold. `admin` manages keys and users and implies every scope."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

ADMIN = "admin"

SCOPES: dict[str, str] = {
    "items:read": "Read items.",
    "items:write": "Create, change and delete items (which triggers automations).",
    "automations:read": "Read automations and their code.",
    "automations:write": "Create, change and delete automations: this is code execution.",
    "runs:read": "Read runs and their output.",
    "runs:write": "Run an automation manually.",
    "metrics": "Read the Prometheus metrics.",
    ADMIN: "Manage API keys and users; implies every other scope.",
}

Scope = Literal[
    "items:read", "items:write", "automations:read", "automations:write",
    "runs:read", "runs:write", "metrics", "admin",
]


def grants(held: Iterable[str], wanted: str) -> bool:
    """Does a credential holding `held` have `wanted`?"""
    held = held if isinstance(held, frozenset | set) else set(held)
    return wanted in held or ADMIN in held


def normalise(scopes: Iterable[str]) -> list[str]:
    """Deduplicated, in the canonical order of SCOPES."""
    wanted = set(scopes)
    return [s for s in SCOPES if s in wanted]
