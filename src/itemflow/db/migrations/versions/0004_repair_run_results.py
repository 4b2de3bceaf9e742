"""repair run results that hold unpaired surrogates

A run's `result` with a JSON "\\ud800" escape was stored as such, and every read of it (the
run, and each list that holds it) failed. Such strings now get U+FFFD where an unpaired
surrogate was, as the runs model stores every new outcome. Only `result` needs it: the text
columns could never hold a surrogate (both drivers refuse to encode one).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 09:10:00
"""
from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

from itemflow.db.base import storable_json

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

BATCH = 500


def upgrade() -> None:
    runs = sa.table('runs', sa.column('id', sa.BigInteger), sa.column('result', sa.JSON))
    text = sa.cast(runs.c.result, sa.Text)
    # Only JSON with a "\ud..." escape can hold a surrogate (\ud800-\udfff); with '!' as the
    # escape character, the backslash in the pattern is literal on both databases.
    suspect = sa.func.lower(text).like('%\\ud%', escape='!')
    bind = op.get_bind()
    after = 0
    while True:
        rows = bind.execute(
            sa.select(runs.c.id, text).where(runs.c.id > after, suspect)
            .order_by(runs.c.id).limit(BATCH)
        ).all()
        for run_id, raw in rows:
            value = json.loads(raw)
            repaired = storable_json(value)
            if repaired != value:
                bind.execute(runs.update().where(runs.c.id == run_id).values(result=repaired))
        if len(rows) < BATCH:
            return
        after = rows[-1][0]


def downgrade() -> None:
    pass  # the surrogates are gone for good, and nothing needs them back
