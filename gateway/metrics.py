"""Every Prometheus metric of smsgw, defined here and nowhere else.

Each gateway instance owns one `Metrics` with its own `CollectorRegistry`, so
tests can run several gateways in one process. Labels are low-cardinality by
rule: an account's system_id, a route (upstream) name, an interface, a
status, a PDU command; never a phone number, message text or message id.

Hot paths take label children through `child()` (cached), the SMPP libraries
report PDUs through `pdu_observer()`, and the store's committer reports each
group commit through `observe_commit()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

from smpp.constants import CommandId, CommandStatus

# accepted -> submitted: from a few milliseconds (a window kept full) to minutes
# (retries) and an hour (an upstream outage, or a message held for its send_at).
SUBMIT_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    900,
    3600,
)
# submitted -> delivered: seconds for a phone that is on, up to days for one that is off.
DELIVERY_BUCKETS = (
    0.1,
    0.5,
    1,
    2,
    5,
    10,
    30,
    60,
    120,
    300,
    600,
    1800,
    3600,
    4 * 3600,
    12 * 3600,
    86400,
    3 * 86400,
)
# One group commit: under a millisecond on SQLite, a few on PostgreSQL, more when the disk stalls.
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)

# The outcomes of smsgw_receipts_total: "matched" (applied to its message on arrival),
# "held" (no message had that upstream id yet: kept in unmatched_receipts),
# "matched_late" (a held receipt applied when its submit_sm_resp was recorded),
# "unreadable" (neither receipted_message_id nor a receipt text to read).
RECEIPT_OUTCOMES: Final = ("matched", "held", "matched_late", "unreadable")
# The outcomes of smsgw_webhook_deliveries_total.
WEBHOOK_OUTCOMES: Final = ("delivered", "failed", "expired")
# The sides of smsgw_smpp_pdus_total: our SMPP server (ESMEs bound to us) or our
# clients (bound to upstream SMSCs).
PDU_SIDES: Final = ("esme", "upstream")

_COMMAND_NAMES: Final[dict[int, str]] = {c.value: c.name.lower() for c in CommandId}
_STATUS_NAMES: Final[dict[int, str]] = {s.value: f"ESME_{s.name}" for s in CommandStatus}
# Reserved and vendor-specific statuses (SMPP 3.4 section 5.1.3, 0x400-0x4FF for
# SMSC vendors) keep their hex value; anything beyond is a peer's garbage and
# must not grow the label set.
_HEX_STATUS_LIMIT: Final = 0x500
# PduObserver caches the label child per raw (direction, command_id, status);
# a peer sending garbage must not grow that cache without bound either.
_PDU_CACHE_LIMIT: Final = 4096


def command_label(command_id: int) -> str:
    """The spec's name of a command (``submit_sm``), or ``unknown``."""
    return _COMMAND_NAMES.get(command_id, "unknown")


def status_label(command_status: int) -> str:
    """``ESME_ROK``, ``ESME_RTHROTTLED`` ..., a reserved or vendor status in hex, or ``unknown``."""
    name = _STATUS_NAMES.get(command_status)
    if name is not None:
        return name
    if 0 <= command_status < _HEX_STATUS_LIMIT:
        return f"0x{command_status:08X}"
    return "unknown"


M = TypeVar("M", Counter, Gauge, Histogram)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        r = self.registry
        ProcessCollector(registry=r)

        # Contract (interface.md, "Prometheus metrics").
        self.messages_accepted = Counter(
            "smsgw_messages_accepted",
            "Messages committed to the store.",
            ["account", "interface"],
            registry=r,
        )
        self.message_status = Counter(
            "smsgw_message_status",
            "Transitions of messages into each status.",
            ["status", "route"],
            registry=r,
        )
        self.submit_latency = Histogram(
            "smsgw_submit_latency_seconds",
            "Accepted to submitted (submit_sm_resp ROK).",
            ["route"],
            buckets=SUBMIT_BUCKETS,
            registry=r,
        )
        self.delivery_latency = Histogram(
            "smsgw_delivery_latency_seconds",
            "Submitted to delivered (final receipt).",
            ["route"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.upstream_bound = Gauge(
            "smsgw_upstream_bound", "Bound SMPP sessions to each upstream.", ["route"], registry=r
        )
        self.upstream_inflight = Gauge(
            "smsgw_upstream_inflight",
            "submit_sm awaiting their response, per upstream.",
            ["route"],
            registry=r,
        )
        self.smpp_sessions = Gauge(
            "smsgw_smpp_sessions", "ESME sessions bound now.", ["account", "bind_type"], registry=r
        )
        self.queue_depth = Gauge(
            "smsgw_queue_depth", "Accepted messages not yet submitted.", registry=r
        )
        self.route_cost = Counter(
            "smsgw_route_cost", "Money spent per route (price per segment).", ["route"], registry=r
        )

        # More for operators.
        self.mqtt_pending = Gauge(
            "smsgw_mqtt_outbox_pending", "Status events not yet published to MQTT.", registry=r
        )
        self.mqtt_published = Gauge(
            "smsgw_mqtt_events_published",
            "Status events published to MQTT (and acknowledged) since start.",
            registry=r,
        )
        self.mqtt_connected = Gauge(
            "smsgw_mqtt_connected", "1 while connected to the MQTT broker.", registry=r
        )
        self.route_selections = Counter(
            "smsgw_route_selections",
            "Routes chosen by the selector, by policy; explored=yes when exploration chose it.",
            ["route", "policy", "explored"],
            registry=r,
        )
        self.submit_errors = Counter(
            "smsgw_upstream_submit_errors",
            "submit_sm that did not end in ROK, by reason.",
            ["route", "reason"],
            registry=r,
        )
        self.receipts = Counter(
            "smsgw_receipts",
            "Delivery receipts from upstreams, by how they matched: matched, held "
            "(kept until its submit_sm_resp is recorded), matched_late, unreadable.",
            ["route", "outcome"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "smsgw_webhook_deliveries",
            "Webhook deliveries by outcome: delivered, failed (an attempt), expired (given up).",
            ["outcome"],
            registry=r,
        )
        self.store_batch_size = Histogram(
            "smsgw_store_batch_operations",
            "Operations per group commit.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.store_commit_latency = Histogram(
            "smsgw_store_commit_seconds",
            "Time to execute and commit one group.",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.smpp_pdus = Counter(
            "smsgw_smpp_pdus",
            "SMPP PDUs read (in) and written (out), on the ESME side (our server) "
            "and the upstream side (our clients).",
            ["direction", "side", "command", "status"],
            registry=r,
        )

    def child(self, metric: M, *labels: str) -> M:
        """`metric.labels(*labels)`, remembered: prometheus_client takes a lock and
        builds the key on every labels() call, and this runs several times per message."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found

    def observe_commit(self, batch_size: int, seconds: float) -> None:
        """One group commit of `batch_size` operations that took `seconds`."""
        self.store_batch_size.observe(batch_size)
        self.store_commit_latency.observe(seconds)

    def pdu_observer(self, side: str) -> Callable[[str, int, int], None]:
        """The `on_pdu` callback for an SmppServer (side ``esme``) or SmppClient (``upstream``)."""
        if side not in PDU_SIDES:
            raise ValueError(f"side must be one of {PDU_SIDES}")
        return _PduObserver(self.smpp_pdus, side)

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class _PduObserver:
    """Counts PDUs into smsgw_smpp_pdus_total; one dict lookup per PDU once warm."""

    __slots__ = ("_cache", "_counter", "_side")

    def __init__(self, counter: Counter, side: str) -> None:
        self._counter = counter
        self._side = side
        self._cache: dict[tuple[str, int, int], Counter] = {}

    def __call__(self, direction: str, command_id: int, command_status: int) -> None:
        key = (direction, command_id, command_status)
        child = self._cache.get(key)
        if child is None:
            child = self._counter.labels(
                "in" if direction == "in" else "out",
                self._side,
                command_label(command_id),
                status_label(command_status),
            )
            if len(self._cache) < _PDU_CACHE_LIMIT:
                self._cache[key] = child
        child.inc()
