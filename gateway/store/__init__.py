"""The store: tables, engine, group commit, typed writes and reads.

store = await Store.open(settings.database)     # after gateway.migrate.upgrade(url)
result = await store.accept(NewMessage(...))    # returns once committed
...
await store.close()
"""

from gateway.store.committer import (
    CommitterClosed,
    CommitterStats,
    GroupCommitter,
    WriteOp,
    WriterLost,
    is_transient,
    log_failure,
)
from gateway.store.engine import create_engine, is_sqlite
from gateway.store.ops import (
    AcceptMessage,
    ApplyReceipt,
    CancelMessage,
    DeferMessage,
    MarkSmppReceiptsSent,
    PartUpdate,
    RecordAttempt,
    TransitionMessage,
    WebhookAttempt,
)
from gateway.store.records import (
    RECEIPT_TEXT_CHARS,
    AcceptResult,
    Account,
    CancelOutcome,
    CreatedAccount,
    EventRecord,
    MessageRecord,
    NewMessage,
    PartRecord,
    ReceiptMessage,
    ReceiptResult,
    SmppReceipt,
    StatusChange,
    WebhookDelivery,
    format_time,
    utcnow,
)
from gateway.store.store import AccountExists, Store
from gateway.store.tables import metadata

__all__ = [
    "RECEIPT_TEXT_CHARS",
    "AcceptMessage",
    "AcceptResult",
    "Account",
    "AccountExists",
    "ApplyReceipt",
    "CancelMessage",
    "CancelOutcome",
    "CommitterClosed",
    "CommitterStats",
    "CreatedAccount",
    "DeferMessage",
    "EventRecord",
    "GroupCommitter",
    "MarkSmppReceiptsSent",
    "MessageRecord",
    "NewMessage",
    "PartRecord",
    "PartUpdate",
    "ReceiptMessage",
    "ReceiptResult",
    "RecordAttempt",
    "SmppReceipt",
    "StatusChange",
    "Store",
    "TransitionMessage",
    "WebhookAttempt",
    "WebhookDelivery",
    "WriteOp",
    "WriterLost",
    "create_engine",
    "format_time",
    "is_sqlite",
    "is_transient",
    "log_failure",
    "metadata",
    "utcnow",
]
