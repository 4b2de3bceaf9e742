"""ids are never reused: AUTOINCREMENT for items, automations and runs on SQLite

Without it SQLite hands the highest deleted id to the next row, and a new item or automation
inherits the old one's run history (runs outlive both). The tables are rebuilt with their
rows, indexes and foreign keys; each sequence starts past every id the database still
mentions, also those of deleted items and automations that runs name. PostgreSQL sequences
never reuse an id: nothing to do there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 09:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# Each table, and the highest id it has ever given out that the database still records.
HIGHEST_ID = {
    'items': "SELECT max(coalesce((SELECT max(id) FROM items), 0),"
             " coalesce((SELECT max(item_id) FROM runs), 0))",
    'automations': "SELECT max(coalesce((SELECT max(id) FROM automations), 0),"
                   " coalesce((SELECT max(automation_id) FROM runs), 0))",
    'runs': "SELECT coalesce(max(id), 0) FROM runs",
}


def _rebuild(autoincrement: bool) -> None:
    bind = op.get_bind()
    if bind.dialect.name != 'sqlite':
        return
    # Dropping the old items table with foreign keys on would cascade to the automations.
    if bind.exec_driver_sql('PRAGMA foreign_keys').scalar():
        raise RuntimeError('migrate with PRAGMA foreign_keys off: rebuilding items would '
                           'delete every automation')
    for table in HIGHEST_ID:
        with op.batch_alter_table(table, recreate='always',
                                  table_kwargs={'sqlite_autoincrement': autoincrement}):
            pass
    if autoincrement:
        for table, highest in HIGHEST_ID.items():
            seq = bind.execute(sa.text(highest)).scalar()
            bind.execute(sa.text('DELETE FROM sqlite_sequence WHERE name = :name'), {'name': table})
            bind.execute(sa.text('INSERT INTO sqlite_sequence (name, seq) VALUES (:name, :seq)'),
                         {'name': table, 'seq': seq})


def upgrade() -> None:
    _rebuild(autoincrement=True)


def downgrade() -> None:
    _rebuild(autoincrement=False)
