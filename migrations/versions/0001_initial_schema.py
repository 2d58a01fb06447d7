"""Initial schema: accounts, messages, parts, events, receipts, idempotency keys, outboxes.

Revision ID: 0001
Revises:
Written from the autogenerate output of gateway.store.tables, then cleaned:
UtcTimestamp columns are plain BIGINT (microseconds since the epoch, UTC) here, so the
migration does not depend on application code.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("system_id", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("api_key_hash", sa.String(length=200), nullable=False),
        sa.Column("api_key_lookup", sa.String(length=64), nullable=False),
        sa.Column("tps", sa.Integer(), nullable=False),
        sa.Column("routing", sa.String(length=16), nullable=False),
        sa.Column("default_source", sa.String(length=21), nullable=True),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("webhook_secret", sa.String(length=64), nullable=False),
        sa.Column("max_price", sa.Double(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("api_key_lookup", name=op.f("uq_accounts_api_key_lookup")),
        sa.UniqueConstraint("system_id", name=op.f("uq_accounts_system_id")),
    )
    op.create_table(
        "unmatched_receipts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("upstream", sa.String(length=64), nullable=False),
        sa.Column("upstream_message_id", sa.String(length=65), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unmatched_receipts")),
    )
    op.create_index(
        op.f("ix_unmatched_receipts_received_at"),
        "unmatched_receipts",
        ["received_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_unmatched_receipts_upstream_upstream_message_id"),
        "unmatched_receipts",
        ["upstream", "upstream_message_id"],
        unique=False,
    )

    op.create_table(
        "idempotency_keys",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("response", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_idempotency_keys_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("account_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_index(
        op.f("ix_idempotency_keys_created_at"), "idempotency_keys", ["created_at"], unique=False
    )

    op.create_table(
        "messages",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("interface", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=21), nullable=False),
        sa.Column("destination", sa.String(length=21), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(length=16), nullable=False),
        sa.Column("data_coding", sa.SmallInteger(), nullable=False),
        sa.Column("segments", sa.SmallInteger(), nullable=False),
        sa.Column("registered_delivery", sa.SmallInteger(), nullable=False),
        sa.Column("client_ref", sa.String(length=128), nullable=True),
        sa.Column("callback_url", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("route", sa.String(length=64), nullable=True),
        sa.Column("price", sa.Double(), nullable=True),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("send_at", sa.BigInteger(), nullable=True),
        sa.Column("valid_until", sa.BigInteger(), nullable=True),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.Column("left_infrastructure_at", sa.BigInteger(), nullable=True),
        sa.Column("handed_to_carrier_at", sa.BigInteger(), nullable=True),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_messages_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
    )
    op.create_index(
        op.f("ix_messages_account_id_client_ref"),
        "messages",
        ["account_id", "client_ref"],
        unique=False,
    )
    op.create_index(
        op.f("ix_messages_status_due_at"), "messages", ["status", "due_at"], unique=False
    )

    op.create_table(
        "events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_events_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_message_id_id"), "events", ["message_id", "id"], unique=False)

    op.create_table(
        "parts",
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("seqnum", sa.SmallInteger(), nullable=False),
        sa.Column("upstream", sa.String(length=64), nullable=True),
        sa.Column("upstream_message_id", sa.String(length=65), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("price", sa.Double(), nullable=True),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("submitted_at", sa.BigInteger(), nullable=True),
        sa.Column("handed_to_carrier_at", sa.BigInteger(), nullable=True),
        sa.Column("done_at", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_parts_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("message_id", "seqnum", name=op.f("pk_parts")),
    )
    op.create_index(
        op.f("ix_parts_upstream_upstream_message_id"),
        "parts",
        ["upstream", "upstream_message_id"],
        unique=True,
    )

    op.create_table(
        "smpp_receipts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=64), nullable=True),
        sa.Column("at", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_smpp_receipts_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_smpp_receipts_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smpp_receipts")),
    )
    op.create_index(
        op.f("ix_smpp_receipts_account_id_sent_at_id"),
        "smpp_receipts",
        ["account_id", "sent_at", "id"],
        unique=False,
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name=op.f("fk_webhook_deliveries_account_id_accounts")
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name=op.f("fk_webhook_deliveries_message_id_messages")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
    )
    op.create_index(
        op.f("ix_webhook_deliveries_status_next_attempt_at"),
        "webhook_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(
        op.f("ix_webhook_deliveries_status_next_attempt_at"), table_name="webhook_deliveries"
    )

    op.drop_table("webhook_deliveries")
    op.drop_index(op.f("ix_smpp_receipts_account_id_sent_at_id"), table_name="smpp_receipts")

    op.drop_table("smpp_receipts")
    op.drop_index(op.f("ix_parts_upstream_upstream_message_id"), table_name="parts")

    op.drop_table("parts")
    op.drop_index(op.f("ix_events_message_id_id"), table_name="events")

    op.drop_table("events")
    op.drop_index(op.f("ix_messages_status_due_at"), table_name="messages")
    op.drop_index(op.f("ix_messages_account_id_client_ref"), table_name="messages")

    op.drop_table("messages")
    op.drop_index(op.f("ix_idempotency_keys_created_at"), table_name="idempotency_keys")

    op.drop_table("idempotency_keys")
    op.drop_index(
        op.f("ix_unmatched_receipts_upstream_upstream_message_id"), table_name="unmatched_receipts"
    )
    op.drop_index(op.f("ix_unmatched_receipts_received_at"), table_name="unmatched_receipts")

    op.drop_table("unmatched_receipts")
    op.drop_table("accounts")
