"""Every SQL table of smsgw, in one MetaData (Alembic's target_metadata).

Time columns are ``UtcTimestamp``: integer microseconds since the Unix epoch (UTC) in a
BIGINT. SQLite has no timezone-aware type (DateTime(timezone=True) silently drops the
offset there), while an integer compares, sorts and round-trips exactly the same on
SQLite and PostgreSQL; in psql, ``to_timestamp(created_at / 1e6)`` shows it. In Python
the columns are always timezone-aware ``datetime`` in UTC; naive datetimes are refused.

Money (``price``) is a double: SQLite has no exact decimal, and prices per segment are
small numbers shown, not booked.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
    "UtcTimestamp",
    "accounts",
    "events",
    "idempotency_keys",
    "messages",
    "metadata",
    "mqtt_outbox",
    "parts",
    "smpp_receipts",
    "unmatched_receipts",
    "webhook_deliveries",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class UtcTimestamp(TypeDecorator[datetime]):
    """Aware UTC datetime stored as BIGINT microseconds since the epoch."""

    impl = sa.BigInteger
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> int | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given for a UTC timestamp column")
        return (value - _EPOCH) // timedelta(microseconds=1)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return _EPOCH + timedelta(microseconds=int(value))


# Names for constraints and indexes, so that migrations are reproducible on both databases.
metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# A 64-bit autoincrement key; SQLite only autoincrements an "INTEGER PRIMARY KEY".
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("system_id", sa.String(16), nullable=False, unique=True),
    # scrypt, "scrypt$n$r$p$salt$hash" (gateway/store/secrets.py)
    sa.Column("password_hash", sa.String(200), nullable=False),
    sa.Column("api_key_hash", sa.String(200), nullable=False),
    # sha256 hex of the API key: an indexed lookup; the scrypt hash above then verifies it
    sa.Column("api_key_lookup", sa.String(64), nullable=False, unique=True),
    sa.Column("tps", sa.Integer, nullable=False),
    sa.Column("routing", sa.String(16), nullable=False),
    sa.Column("default_source", sa.String(21), nullable=True),
    sa.Column("callback_url", sa.Text, nullable=True),
    # HMAC key of X-Smsgw-Signature: must be readable to sign, so it is not hashed
    sa.Column("webhook_secret", sa.String(64), nullable=False),
    sa.Column("max_price", sa.Double, nullable=True),
    sa.Column("created_at", UtcTimestamp, nullable=False),
    sa.Column("updated_at", UtcTimestamp, nullable=False),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # gateway/ids.py
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("interface", sa.String(8), nullable=False),  # http | smpp
    sa.Column("source", sa.String(21), nullable=False),
    sa.Column("destination", sa.String(21), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("encoding", sa.String(16), nullable=False),  # gsm7 | ucs2 | latin1 | binary
    sa.Column("data_coding", sa.SmallInteger, nullable=False),
    sa.Column("segments", sa.SmallInteger, nullable=False),
    sa.Column("registered_delivery", sa.SmallInteger, nullable=False),
    sa.Column("client_ref", sa.String(128), nullable=True),
    sa.Column("callback_url", sa.Text, nullable=True),  # the message's or the account's default
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("route", sa.String(64), nullable=True),
    sa.Column("price", sa.Double, nullable=True),  # sum over the parts
    sa.Column("error", sa.String(64), nullable=True),
    sa.Column("send_at", UtcTimestamp, nullable=True),
    sa.Column("valid_until", UtcTimestamp, nullable=True),
    # When the dispatcher should look at it next: send_at, or now, or later after a retry.
    sa.Column("due_at", UtcTimestamp, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", UtcTimestamp, nullable=False),
    sa.Column("updated_at", UtcTimestamp, nullable=False),
    sa.Column("left_infrastructure_at", UtcTimestamp, nullable=True),
    sa.Column("handed_to_carrier_at", UtcTimestamp, nullable=True),
    sa.Column("delivered_at", UtcTimestamp, nullable=True),
    sa.Index(None, "status", "due_at"),  # the due queue and recovery
    sa.Index(None, "account_id", "client_ref"),
    # Reports and listings (gateway/reports.py, migration 0003): an account's messages
    # newest first, by status, and every account's for the admin.
    sa.Index(None, "account_id", "created_at", "id"),
    sa.Index(None, "account_id", "status", "created_at", "id"),
    sa.Index(None, "created_at", "id"),
)

parts = sa.Table(
    "parts",
    metadata,
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id"), primary_key=True),
    sa.Column("seqnum", sa.SmallInteger, primary_key=True),  # 1-based segment number
    sa.Column("upstream", sa.String(64), nullable=True),
    sa.Column("upstream_message_id", sa.String(65), nullable=True),  # SMPP 3.4: C-Octet 65
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("price", sa.Double, nullable=True),
    sa.Column("error", sa.String(64), nullable=True),
    sa.Column("submitted_at", UtcTimestamp, nullable=True),
    sa.Column("handed_to_carrier_at", UtcTimestamp, nullable=True),
    sa.Column("done_at", UtcTimestamp, nullable=True),
    sa.Column("updated_at", UtcTimestamp, nullable=False),
    # Receipts are matched by it; NULLs (not submitted yet) do not collide.
    sa.Index(None, "upstream", "upstream_message_id", unique=True),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("at", UtcTimestamp, nullable=False),
    sa.Column("detail", sa.JSON, nullable=False),
    sa.Index(None, "message_id", "id"),
)

unmatched_receipts = sa.Table(
    "unmatched_receipts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("upstream", sa.String(64), nullable=False),
    sa.Column("upstream_message_id", sa.String(65), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.String(64), nullable=True),
    sa.Column("at", UtcTimestamp, nullable=False),  # the receipt's time
    sa.Column("payload", sa.JSON, nullable=False),  # what the caller wants in the event detail
    sa.Column("received_at", UtcTimestamp, nullable=False),
    sa.Index(None, "upstream", "upstream_message_id"),
    sa.Index(None, "received_at"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("message_id", sa.String(32), nullable=False),
    sa.Column("response", sa.Text, nullable=False),  # the first answer, replayed verbatim
    sa.Column("created_at", UtcTimestamp, nullable=False),
    sa.Index(None, "created_at"),
)

# Outbox: written in the same transaction as the status change it reports, so a
# pending delivery survives a restart; the webhook worker drains it.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id"), nullable=False),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("body", sa.Text, nullable=False),  # exact bytes signed and POSTed (UTF-8 JSON)
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("next_attempt_at", UtcTimestamp, nullable=False),
    sa.Column("created_at", UtcTimestamp, nullable=False),
    sa.Column("updated_at", UtcTimestamp, nullable=False),
    sa.Index(None, "status", "next_attempt_at"),
)

# Outbox of delivery receipts (deliver_sm) owed to SMPP accounts; kept while no
# receiver is bound, for at most smpp.receipt_ttl_s after ``at``.
smpp_receipts = sa.Table(
    "smpp_receipts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id"), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.String(64), nullable=True),
    sa.Column("at", UtcTimestamp, nullable=False),
    sa.Column("sent_at", UtcTimestamp, nullable=True),
    sa.Index(None, "account_id", "sent_at", "id"),
)

# Outbox of MQTT events (<prefix>/events/<system_id>/<message_id>), written in the
# same transaction as the status change while an MqttPublisher is enabled on the
# store; published in id order, then stamped with published_at.
mqtt_outbox = sa.Table(
    "mqtt_outbox",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id"), nullable=False),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the exact JSON published (UTF-8)
    sa.Column("created_at", UtcTimestamp, nullable=False),
    sa.Column("published_at", UtcTimestamp, nullable=True),
    sa.Index(None, "published_at", "id"),  # the unpublished (NULL) ones in id order
)
