"""Every Prometheus metric of smsgw, defined here and nowhere else.

Each gateway instance owns one `Metrics` with its own `CollectorRegistry`, so
tests can run several gateways in one process. Labels are low-cardinality by
rule: an account's system_id, a route (upstream) name, an interface, a
status, a PDU command; never a phone number, message text or message id.

Hot paths take label children through `child()` (cached), the SMPP libraries
report PDUs through `pdu_observer()`, and the store's committer reports each
group commit through `observe_commit()`. All three end in a plain addition to a
`LocklessValue`: every metric here keeps its numbers without prometheus_client's
lock, and exposition (names, types, labels, HELP) is still prometheus_client's.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from typing import Final, Protocol, overload

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.samples import Exemplar

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
# A PDU counter caches the label child's value per raw (direction, command_id,
# status); a peer sending garbage must not grow that cache without bound either.
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


class LocklessValue:
    """A metric's number with no lock, in place of prometheus_client's MutexValue.

    Every update and every scrape of a gateway's metrics runs on its event
    loop's thread (the committer calls `observe_commit` there too, once the
    writer thread has handed the transaction back), so a plain ``+=`` loses no
    update; prometheus_client's updates, a lock and a chain of calls each, cost
    ~6 % of the main thread at 2,000 msg/s. Not for prometheus_client's
    multiprocess mode (smsgw has one process and a registry per gateway).
    """

    __slots__ = ("_exemplar", "value")

    def __init__(self) -> None:
        self.value = 0.0
        self._exemplar: Exemplar | None = None

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount

    def set(self, value: float, timestamp: float | None = None) -> None:
        self.value = float(value)

    # The rest of MutexValue's interface, which prometheus_client's methods use.
    def set_exemplar(self, exemplar: Exemplar) -> None:
        self._exemplar = exemplar

    def get(self) -> float:
        return self.value

    def get_exemplar(self) -> Exemplar | None:
        return self._exemplar


class HistogramValues:
    """A histogram child's buckets and sum, which prometheus_client reads at scrape time.

    As in Histogram.observe, each bucket counts only the observations whose
    first upper bound at or above them is its own (the cumulative counts are
    added up when scraped). A NaN would land in the first bucket rather than
    none: these histograms take durations and sizes, never NaN.
    """

    __slots__ = ("_bounds", "buckets", "sum")

    def __init__(self, upper_bounds: Sequence[float]) -> None:
        self._bounds = tuple(upper_bounds)
        self.buckets = [LocklessValue() for _ in self._bounds]
        self.sum = LocklessValue()

    def observe(self, amount: float) -> None:
        self.sum.value += amount
        self.buckets[bisect_left(self._bounds, amount)].value += 1


# prometheus_client's metrics with LocklessValues. `_metric_init` makes the
# values of an unlabelled metric or of a label child (prometheus_client's own
# hook for them); `fast` is what `Metrics.child()` hands to hot paths, while
# labels(), set_function() and exposition stay prometheus_client's.
class LocklessCounter(Counter):
    fast: LocklessValue

    def _metric_init(self) -> None:
        super()._metric_init()
        self._value = self.fast = LocklessValue()


class LocklessGauge(Gauge):
    fast: LocklessValue

    def _metric_init(self) -> None:
        super()._metric_init()
        self._value = self.fast = LocklessValue()


class LocklessHistogram(Histogram):
    fast: HistogramValues

    def _metric_init(self) -> None:
        super()._metric_init()
        self.fast = HistogramValues(self._upper_bounds)
        self._buckets = self.fast.buckets
        self._sum = self.fast.sum


class CounterChild(Protocol):
    def inc(self, amount: float = ...) -> None: ...


class GaugeChild(CounterChild, Protocol):
    def dec(self, amount: float = ...) -> None: ...

    def set(self, value: float) -> None: ...


class HistogramChild(Protocol):
    def observe(self, amount: float) -> None: ...


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._children: dict[
            tuple[LocklessCounter | LocklessGauge | LocklessHistogram, tuple[str, ...]],
            LocklessValue | HistogramValues,
        ] = {}
        r = self.registry
        ProcessCollector(registry=r)

        # Contract (interface.md, "Prometheus metrics").
        self.messages_accepted = LocklessCounter(
            "smsgw_messages_accepted",
            "Messages committed to the store.",
            ["account", "interface"],
            registry=r,
        )
        self.message_status = LocklessCounter(
            "smsgw_message_status",
            "Transitions of messages into each status.",
            ["status", "route"],
            registry=r,
        )
        self.submit_latency = LocklessHistogram(
            "smsgw_submit_latency_seconds",
            "Accepted to submitted (submit_sm_resp ROK).",
            ["route"],
            buckets=SUBMIT_BUCKETS,
            registry=r,
        )
        self.delivery_latency = LocklessHistogram(
            "smsgw_delivery_latency_seconds",
            "Submitted to delivered (final receipt).",
            ["route"],
            buckets=DELIVERY_BUCKETS,
            registry=r,
        )
        self.upstream_bound = LocklessGauge(
            "smsgw_upstream_bound", "Bound SMPP sessions to each upstream.", ["route"], registry=r
        )
        self.upstream_inflight = LocklessGauge(
            "smsgw_upstream_inflight",
            "submit_sm awaiting their response, per upstream.",
            ["route"],
            registry=r,
        )
        self.smpp_sessions = LocklessGauge(
            "smsgw_smpp_sessions", "ESME sessions bound now.", ["account", "bind_type"], registry=r
        )
        self.queue_depth = LocklessGauge(
            "smsgw_queue_depth", "Accepted messages not yet submitted.", registry=r
        )
        self.route_cost = LocklessCounter(
            "smsgw_route_cost", "Money spent per route (price per segment).", ["route"], registry=r
        )

        # More for operators.
        self.mqtt_pending = LocklessGauge(
            "smsgw_mqtt_outbox_pending", "Status events not yet published to MQTT.", registry=r
        )
        self.mqtt_published = LocklessGauge(
            "smsgw_mqtt_events_published",
            "Status events published to MQTT (and acknowledged) since start.",
            registry=r,
        )
        self.mqtt_connected = LocklessGauge(
            "smsgw_mqtt_connected", "1 while connected to the MQTT broker.", registry=r
        )
        self.route_selections = LocklessCounter(
            "smsgw_route_selections",
            "Routes chosen by the selector, by policy; explored=yes when exploration chose it.",
            ["route", "policy", "explored"],
            registry=r,
        )
        self.submit_errors = LocklessCounter(
            "smsgw_upstream_submit_errors",
            "submit_sm that did not end in ROK, by reason.",
            ["route", "reason"],
            registry=r,
        )
        self.receipts = LocklessCounter(
            "smsgw_receipts",
            "Delivery receipts from upstreams, by how they matched: matched, held "
            "(kept until its submit_sm_resp is recorded), matched_late, unreadable.",
            ["route", "outcome"],
            registry=r,
        )
        self.webhook_deliveries = LocklessCounter(
            "smsgw_webhook_deliveries",
            "Webhook deliveries by outcome: delivered, failed (an attempt), expired (given up).",
            ["outcome"],
            registry=r,
        )
        self.store_batch_size = LocklessHistogram(
            "smsgw_store_batch_operations",
            "Operations per group commit.",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.store_commit_latency = LocklessHistogram(
            "smsgw_store_commit_seconds",
            "Time to execute and commit one group.",
            buckets=COMMIT_BUCKETS,
            registry=r,
        )
        self.store_write_failures = LocklessCounter(
            "smsgw_store_write_failures",
            "Writes that failed, by reason: unavailable (the database was away: lost or "
            "refused connections; the write is refused or tried again) or refused (what "
            "it writes: an illegal transition, a constraint).",
            ["reason"],
            registry=r,
        )
        for reason in ("unavailable", "refused"):  # at 0 from the start, for rate() and alerts
            self.store_write_failures.labels(reason)
        self.smpp_pdus = LocklessCounter(
            "smsgw_smpp_pdus",
            "SMPP PDUs read (in) and written (out), on the ESME side (our server) "
            "and the upstream side (our clients).",
            ["direction", "side", "command", "status"],
            registry=r,
        )

    @overload
    def child(self, metric: LocklessCounter, *labels: str) -> CounterChild: ...

    @overload
    def child(self, metric: LocklessGauge, *labels: str) -> GaugeChild: ...

    @overload
    def child(self, metric: LocklessHistogram, *labels: str) -> HistogramChild: ...

    def child(
        self, metric: LocklessCounter | LocklessGauge | LocklessHistogram, *labels: str
    ) -> CounterChild | GaugeChild | HistogramChild:
        """The values of `metric.labels(*labels)` (of `metric` itself without labels),
        remembered. This runs several times per message: labels() takes a lock and
        builds the key on every call, and the child's inc() or observe() checks and
        calls down three methods, where the values take one addition (and do not
        refuse a negative amount for a counter, as Counter.inc does)."""
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (metric.labels(*labels) if labels else metric).fast
        return found

    def observe_commit(self, batch_size: int, seconds: float) -> None:
        """One group commit of `batch_size` operations that took `seconds`."""
        self.store_batch_size.fast.observe(batch_size)
        self.store_commit_latency.fast.observe(seconds)

    def observe_write_failure(self, operations: int, unavailable: bool) -> None:
        """`operations` writes failed, for the database's availability or not."""
        reason = "unavailable" if unavailable else "refused"
        self.child(self.store_write_failures, reason).inc(operations)

    def pdu_observer(self, side: str) -> Callable[[str, int, int], None]:
        """The `on_pdu` callback for an SmppServer (side ``esme``) or SmppClient (``upstream``)."""
        if side not in PDU_SIDES:
            raise ValueError(f"side must be one of {PDU_SIDES}")
        # A bound method: calling one costs less than an instance's __call__.
        return _PduCounter(self.smpp_pdus, side).count

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)


class _PduCounter:
    """Counts PDUs into smsgw_smpp_pdus_total: a dict lookup and an addition per PDU once warm.

    A PDU's raw (direction, command_id, command_status) is turned into labels
    once, the first time it is seen; the labels child's value is kept under it.
    """

    __slots__ = ("_counter", "_side", "_values")

    def __init__(self, counter: LocklessCounter, side: str) -> None:
        self._counter = counter
        self._side = side
        self._values: dict[tuple[str, int, int], LocklessValue] = {}

    def count(self, direction: str, command_id: int, command_status: int) -> None:
        value = self._values.get((direction, command_id, command_status))
        if value is None:
            value = self._first(direction, command_id, command_status)
        value.value += 1

    def _first(self, direction: str, command_id: int, command_status: int) -> LocklessValue:
        value = self._counter.labels(
            "in" if direction == "in" else "out",
            self._side,
            command_label(command_id),
            status_label(command_status),
        ).fast
        if len(self._values) < _PDU_CACHE_LIMIT:
            self._values[(direction, command_id, command_status)] = value
        return value
