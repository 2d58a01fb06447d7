"""Indexes for delivery reports and message listings (gateway/reports.py).

Revision ID: 0003
Revises: 0002
An account's messages in a time range newest first (account_id, created_at, id), the
same with a status filter (account_id, status, created_at, id), and every account's
for the admin (created_at, id). The trailing id makes the keyset cursor
(created_at, id) an index range scan.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEXES = (
    ("ix_messages_account_id_created_at_id", ["account_id", "created_at", "id"]),
    ("ix_messages_account_id_status_created_at_id", ["account_id", "status", "created_at", "id"]),
    ("ix_messages_created_at_id", ["created_at", "id"]),
)


def upgrade() -> None:
    for name, columns in _INDEXES:
        op.create_index(op.f(name), "messages", columns, unique=False)


def downgrade() -> None:
    for name, _ in reversed(_INDEXES):
        op.drop_index(op.f(name), table_name="messages")
