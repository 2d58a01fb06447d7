"""MQTT outbox: events owed to the broker, written with the status change they report.

Revision ID: 0002
Revises: 0001
Written from the autogenerate output of gateway.store.tables (UtcTimestamp as BIGINT,
as in 0001).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "mqtt_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("published_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_mqtt_outbox_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_mqtt_outbox_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mqtt_outbox")),
    )
    op.create_index(
        op.f("ix_mqtt_outbox_published_at_id"), "mqtt_outbox", ["published_at", "id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_mqtt_outbox_published_at_id"), table_name="mqtt_outbox")
    op.drop_table("mqtt_outbox")
