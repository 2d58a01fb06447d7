"""Every Prometheus metric of smsgw, defined here and nowhere else.

Each gateway instance owns one `Metrics` with its own `CollectorRegistry`, so
tests can run several gateways in one process. Labels are low-cardinality by
rule: an account's system_id, a route (upstream) name, an interface, a
status, a PDU command; never a phone number, message text or message id.
"""

from __future__ import annotations

from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector

# accepted -> submitted: from a few milliseconds (a window kept full) to minutes (retries).
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
COMMIT_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


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
        self.submit_errors = Counter(
            "smsgw_upstream_submit_errors",
            "submit_sm that did not end in ROK, by reason.",
            ["route", "reason"],
            registry=r,
        )
        self.receipts = Counter(
            "smsgw_receipts",
            "Delivery receipts from upstreams, by how they matched.",
            ["route", "outcome"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "smsgw_webhook_deliveries", "Webhook POSTs by outcome.", ["outcome"], registry=r
        )
        self.store_batch_size = Histogram(
            "smsgw_store_batch_operations",
            "Operations per group commit.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.store_commit_latency = Histogram(
            "smsgw_store_commit_seconds",
            "Time to execute and commit one group.",
            buckets=COMMIT_BUCKETS,
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

    def render(self) -> bytes:
        """The Prometheus text exposition of this registry."""
        return generate_latest(self.registry)
