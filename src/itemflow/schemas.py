"""Building blocks shared by the domain schemas."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Ids are positive 64-bit integers (BIGINT on PostgreSQL).
MAX_ID = 2**63 - 1
Id = Annotated[int, Field(ge=1, le=MAX_ID)]


def _storable(text: str) -> str:
    # Valid JSON can carry both, but no text column can hold NUL (PostgreSQL refuses it) or
    # an unpaired surrogate (not UTF-8): refuse them up front, on every database alike.
    if "\x00" in text:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must not contain unpaired surrogates (invalid UTF-16 escapes)") from None
    return text


# Any text that is stored or searched for.
Text = Annotated[str, AfterValidator(_storable)]


class InputSchema(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class OutputSchema(BaseModel):
    model_config = ConfigDict(from_attributes=True)
