"""The floor: one `async def` route returning a constant dict (FastAPI + uvicorn, nothing else).

    uvicorn bare_app:app --app-dir bench
"""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()

ITEM = {"id": 1, "name": "bench", "description": "a constant item"}


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict:
    return ITEM
