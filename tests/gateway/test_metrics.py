"""Metrics: the contract's names and labels, the dashboard and alert rules against
the registry, label values that never carry a number, and the SMPP PDU observer."""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from gateway.metrics import SUBMIT_BUCKETS, Metrics, command_label, status_label
from smpp import CommandId, CommandStatus, SubmitSm
from smpp.aio import ServerSession, SmppClient, SmppServer
from smpp.aio._connection import _HeaderTap
from smpp.aio.server import BaseServerHandler, Bind

CONFIG = Path(__file__).resolve().parents[2] / "config"
DASHBOARD = CONFIG / "grafana-dashboard.json"
ALERTS = CONFIG / "prometheus-alerts.yml"

# interface.md, "Prometheus metrics", and the operators' additions: sample name -> label names.
CONTRACT: dict[str, tuple[str, set[str]]] = {
    "smsgw_messages_accepted_total": ("counter", {"account", "interface"}),
    "smsgw_message_status_total": ("counter", {"status", "route"}),
    "smsgw_submit_latency_seconds_bucket": ("histogram", {"route", "le"}),
    "smsgw_delivery_latency_seconds_bucket": ("histogram", {"route", "le"}),
    "smsgw_upstream_bound": ("gauge", {"route"}),
    "smsgw_upstream_inflight": ("gauge", {"route"}),
    "smsgw_smpp_sessions": ("gauge", {"account", "bind_type"}),
    "smsgw_queue_depth": ("gauge", set()),
    "smsgw_route_cost_total": ("counter", {"route"}),
    "smsgw_smpp_pdus_total": ("counter", {"direction", "side", "command", "status"}),
    "smsgw_receipts_total": ("counter", {"route", "outcome"}),
    "smsgw_webhook_deliveries_total": ("counter", {"outcome"}),
    "smsgw_upstream_submit_errors_total": ("counter", {"route", "reason"}),
    "smsgw_store_batch_operations_bucket": ("histogram", {"le"}),
    "smsgw_store_commit_seconds_bucket": ("histogram", {"le"}),
    "smsgw_store_write_failures_total": ("counter", {"reason"}),
}

_METRIC_NAME = re.compile(r"\b(?:smsgw|process)_[a-z0-9_]*[a-z0-9]")
# A run of digits standing on its own (not the hex of a command_status such as 0x00000401).
_NUMBER = re.compile(r"(?<![0-9A-Za-z])\+?\d{6,}")
_MESSAGE_ID = re.compile(r"[0-9a-f]{32}")


def exposed_names(metrics: Metrics) -> set[str]:
    """Every sample name the registry can expose, whether or not it has samples yet."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def dashboard_queries(node: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if (key in ("expr", "definition") and isinstance(value, str)) or (
                key == "query" and isinstance(value, str) and "(" in value
            ):
                yield value
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def alert_rules(text: str) -> list[dict[str, str]]:
    """The rules of a Prometheus rule file, read line by line (no YAML library needed).

    Knows what config/prometheus-alerts.yml uses: `- alert:` starts a rule; `expr:`
    on one line or as a `|` block; `for:` and `severity:` as plain values.
    """
    rules: list[dict[str, str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        i += 1
        if stripped.startswith("- alert:"):
            rules.append({"alert": stripped.removeprefix("- alert:").strip()})
        elif rules and stripped.startswith(("expr:", "for:", "severity:")):
            key, _, value = stripped.partition(":")
            value = value.strip()
            if key == "expr" and value in ("|", "|-", ">", ">-"):
                indent = len(line) - len(line.lstrip())
                block = []
                while i < len(lines) and (
                    not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
                ):
                    block.append(lines[i].strip())
                    i += 1
                value = "\n".join(block).strip()
            rules[-1][key] = value
    return rules


def used_registry() -> Metrics:
    """A registry after the kind of use the gateway makes of it."""
    m = Metrics()
    m.child(m.messages_accepted, "acme", "http").inc()
    m.child(m.messages_accepted, "acme", "smpp").inc(3)
    for status in ("accepted", "submitted", "delivered", "undelivered"):
        m.child(m.message_status, status, "" if status == "accepted" else "simulator").inc()
    m.child(m.submit_latency, "simulator").observe(0.004)
    m.child(m.delivery_latency, "simulator").observe(12.5)
    m.child(m.upstream_bound, "simulator").set(1)
    m.child(m.upstream_inflight, "simulator").set(3)
    m.smpp_sessions.labels("acme", "transceiver").inc()
    m.queue_depth.set(17)
    m.child(m.route_cost, "simulator").inc(0.045)
    m.child(m.submit_errors, "simulator", "RTHROTTLED").inc()
    m.child(m.route_selections, "simulator", "balanced", "no").inc()
    for outcome in ("matched", "held", "matched_late", "unreadable"):
        m.child(m.receipts, "simulator", outcome).inc()
    for outcome in ("delivered", "failed", "expired"):
        m.webhook_deliveries.labels(outcome=outcome).inc()
    m.observe_commit(42, 0.003)
    m.observe_write_failure(3, True)
    m.observe_write_failure(1, False)
    esme, upstream = m.pdu_observer("esme"), m.pdu_observer("upstream")
    esme("in", CommandId.SUBMIT_SM, 0)
    esme("out", CommandId.SUBMIT_SM_RESP, CommandStatus.RTHROTTLED)
    upstream("out", CommandId.SUBMIT_SM, 0)
    upstream("in", CommandId.SUBMIT_SM_RESP, 0x00000401)  # a vendor-specific status
    upstream("in", 0x12345678, 0xDEADBEEF)  # garbage from a peer
    return m


def samples(metrics: Metrics) -> list[tuple[str, dict[str, str], float]]:
    text = metrics.render().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def assert_no_personal_data_in_labels(metrics: Metrics) -> None:
    for name, labels, _ in samples(metrics):
        for key, value in labels.items():
            if key == "le":
                continue  # a histogram bucket's bound
            assert not _NUMBER.search(value), f"{name}{{{key}={value!r}}} looks like a number"
            assert not _MESSAGE_ID.fullmatch(value), f"{name}{{{key}={value!r}}} is a message id"


# --- (a) the dashboard and the alert rules use only metrics that exist ----------------


def test_dashboard_uses_only_existing_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = list(dashboard_queries(dashboard))
    assert len(queries) > 20
    used = {name for q in queries for name in _METRIC_NAME.findall(q)}
    missing = used - exposed_names(Metrics())
    assert not missing, f"the dashboard uses metrics that do not exist: {sorted(missing)}"
    # ... and shows every contract metric, PDUs, webhooks and the store included.
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    for name in CONTRACT:
        assert name.removesuffix("_bucket") in shown, f"{name} is on no panel"


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        for target in panel.get("targets", []):
            assert target["datasource"]["uid"] == "${datasource}"
            assert target["expr"].count("(") == target["expr"].count(")")


def test_alert_rules_use_only_existing_metrics() -> None:
    text = ALERTS.read_text()
    rules = alert_rules(text)
    assert len(rules) == text.count("- alert:")
    names = {r["alert"] for r in rules}
    assert {
        "SmsgwUpstreamUnbound",
        "SmsgwQueueGrowing",
        "SmsgwDeliveryRatioLow",
        "SmsgwReceiptsOverdue",
    } <= names
    exposed = exposed_names(Metrics())
    for rule in rules:
        assert rule.get("expr"), f"{rule['alert']} has no expr"
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "")), f"{rule['alert']}: for"
        assert rule.get("severity") in ("critical", "warning"), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        missing = set(_METRIC_NAME.findall(rule["expr"])) - exposed
        assert not missing, f"{rule['alert']} uses metrics that do not exist: {sorted(missing)}"
    by_name = {r["alert"]: r for r in rules}
    assert "smsgw_upstream_bound == 0" in by_name["SmsgwUpstreamUnbound"]["expr"]
    assert by_name["SmsgwUpstreamUnbound"]["for"] == "2m"
    assert "deriv(smsgw_queue_depth[10m]) > 0" in by_name["SmsgwQueueGrowing"]["expr"]


def test_the_line_reader_reads_both_expr_forms() -> None:
    rules = alert_rules(
        "groups:\n  - name: g\n    rules:\n"
        "      - alert: One\n        expr: a == 0\n        for: 2m\n"
        "        labels:\n          severity: critical\n"
        "      - alert: Two\n        expr: |\n          b\n\n          > 1\n        for: 5m\n"
    )
    assert rules == [
        {"alert": "One", "expr": "a == 0", "for": "2m", "severity": "critical"},
        {"alert": "Two", "expr": "b\n\n> 1", "for": "5m"},
    ]


# --- (b) the contract's names, types and labels ----------------------------------------


def test_contract_names_types_and_labels() -> None:
    m = used_registry()
    text = m.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    labels_seen: dict[str, set[str]] = {}
    for family in families.values():
        for sample in family.samples:
            labels_seen.setdefault(sample.name, set()).update(sample.labels)
    for name, (kind, labels) in CONTRACT.items():
        assert name in labels_seen, f"{name} is not exposed"
        assert labels_seen[name] == labels, name
        family = next(f for f in families.values() if any(s.name == name for s in f.samples))
        assert family.type == kind, name
    assert "process_cpu_seconds_total" in labels_seen  # the process collector
    # Each gateway its own registry: a second one starts from zero.
    assert Metrics().registry.get_sample_value("smsgw_queue_depth") == 0
    # Failed writes are exposed at 0 before the first one, so alerts on them work.
    for reason in ("unavailable", "refused"):
        assert (
            Metrics().registry.get_sample_value(
                "smsgw_store_write_failures_total", {"reason": reason}
            )
            == 0
        )


def test_observe_commit_and_pdu_labels() -> None:
    m = used_registry()
    value = m.registry.get_sample_value
    assert value("smsgw_store_batch_operations_sum") == 42
    assert value("smsgw_store_commit_seconds_count") == 1
    assert value("smsgw_store_commit_seconds_bucket", {"le": "0.005"}) == 1
    assert value("smsgw_store_write_failures_total", {"reason": "unavailable"}) == 3
    assert value("smsgw_store_write_failures_total", {"reason": "refused"}) == 1
    pdus = {
        (s[1]["side"], s[1]["direction"], s[1]["command"], s[1]["status"]): s[2]
        for s in samples(m)
        if s[0] == "smsgw_smpp_pdus_total"
    }
    assert pdus == {
        ("esme", "in", "submit_sm", "ESME_ROK"): 1,
        ("esme", "out", "submit_sm_resp", "ESME_RTHROTTLED"): 1,
        ("upstream", "out", "submit_sm", "ESME_ROK"): 1,
        ("upstream", "in", "submit_sm_resp", "0x00000401"): 1,
        ("upstream", "in", "unknown", "unknown"): 1,
    }
    with pytest.raises(ValueError):
        m.pdu_observer("smsc")


def test_fast_path_updates_show_in_the_exposition() -> None:
    # child(), observe_commit() and the PDU observer add to the values directly;
    # /metrics must show them with their labels as prometheus_client's own methods would.
    m = Metrics()
    accepted = m.child(m.messages_accepted, "acme", "smpp")
    accepted.inc()
    accepted.inc(2)
    m.messages_accepted.labels("acme", "smpp").inc()  # prometheus_client's way: the same series
    inflight = m.child(m.upstream_inflight, "up")
    inflight.inc()
    inflight.inc()
    inflight.dec()
    m.child(m.queue_depth).set(5)
    for seconds in (0.001, 0.0011, 0.2, 7200):
        m.child(m.submit_latency, "up").observe(seconds)
    m.observe_commit(3, 0.0004)
    on_pdu = m.pdu_observer("upstream")
    for _ in range(3):
        on_pdu("out", CommandId.SUBMIT_SM, 0)
    on_pdu("in", 0x11111111, 0x600)
    on_pdu("in", 0x22222222, 0x700)  # garbage twice: one series

    exposed = samples(m)

    def value(name: str, **labels: str) -> float:
        found = [v for n, ls, v in exposed if n == name and ls == labels]
        assert len(found) == 1, (name, labels, found)
        return found[0]

    assert value("smsgw_messages_accepted_total", account="acme", interface="smpp") == 4
    assert value("smsgw_upstream_inflight", route="up") == 1
    assert value("smsgw_queue_depth") == 5
    bucket = "smsgw_submit_latency_seconds_bucket"
    assert value(bucket, route="up", le="0.001") == 1  # a bound counts in its own bucket
    assert value(bucket, route="up", le="0.0025") == 2
    assert value(bucket, route="up", le="0.25") == 3
    assert value(bucket, route="up", le="3600.0") == 3
    assert value(bucket, route="up", le="+Inf") == 4
    assert value("smsgw_submit_latency_seconds_count", route="up") == 4
    assert value("smsgw_submit_latency_seconds_sum", route="up") == pytest.approx(7200.2021)
    assert value("smsgw_store_batch_operations_bucket", le="2.0") == 0
    assert value("smsgw_store_batch_operations_bucket", le="5.0") == 1
    assert value("smsgw_store_batch_operations_sum") == 3
    assert value("smsgw_store_commit_seconds_bucket", le="0.0005") == 1
    assert value("smsgw_store_commit_seconds_count") == 1
    pdu = {"direction": "out", "side": "upstream", "command": "submit_sm", "status": "ESME_ROK"}
    assert value("smsgw_smpp_pdus_total", **pdu) == 3
    garbage = {"direction": "in", "side": "upstream", "command": "unknown", "status": "unknown"}
    assert value("smsgw_smpp_pdus_total", **garbage) == 2
    # Each series keeps the _created sample prometheus_client gives its children.
    assert value("smsgw_smpp_pdus_created", **pdu) > 0
    assert value("smsgw_submit_latency_seconds_created", route="up") > 0


def test_histogram_values_bucket_as_prometheus_client_does() -> None:
    amounts = (-1.0, 0.0, 0.001, 0.0010001, 0.5, 3600.0, 3600.5, 1e12, float("inf"))
    reference = Histogram("h", "h", ["route"], buckets=SUBMIT_BUCKETS, registry=CollectorRegistry())
    m = Metrics()
    for amount in amounts:
        reference.labels("up").observe(amount)
        m.child(m.submit_latency, "up").observe(amount)

    def exposed(families: Any, prefix: str) -> list[tuple[str, float]]:
        return [
            (s.name.removeprefix(prefix) + s.labels.get("le", ""), s.value)
            for f in families
            for s in f.samples
            if not s.name.endswith("_created")
        ]

    ours = [f for f in m.registry.collect() if f.name == "smsgw_submit_latency_seconds"]
    assert exposed(ours, "smsgw_submit_latency_seconds") == exposed(reference.collect(), "h")


def test_command_and_status_labels() -> None:
    assert command_label(CommandId.BIND_TRANSCEIVER) == "bind_transceiver"
    assert command_label(0x80000004) == "submit_sm_resp"
    assert command_label(CommandId.GENERIC_NACK) == "generic_nack"
    assert command_label(0x00000099) == "unknown"
    assert status_label(0) == "ESME_ROK"
    assert status_label(0x58) == "ESME_RTHROTTLED"
    assert status_label(0x14) == "ESME_RMSGQFUL"
    assert status_label(0x4FF) == "0x000004FF"
    assert status_label(0x500) == "unknown"


# --- (c) label values never carry a phone number or a message id -----------------------


def test_label_values_carry_no_number_or_message_id() -> None:
    assert_no_personal_data_in_labels(used_registry())


# --- (d) the PDU observer over a real SMPP server and client ---------------------------


class _Handler(BaseServerHandler):
    async def authenticate(self, session: ServerSession, bind: Bind) -> None:
        pass

    async def submit_sm(self, session: ServerSession, pdu: SubmitSm) -> str:
        return "0193f0a2b4c5d6e7f8091a2b3c4d5e6f"


def _submit() -> SubmitSm:
    return SubmitSm(
        source_addr="ACME", dest_addr_ton=1, dest_addr_npi=1, destination_addr="34600123456"
    )


def _client(port: int, **kwargs: Any) -> SmppClient:
    return SmppClient(
        "127.0.0.1",
        port,
        system_id="acme",
        password="secret",
        reconnect=False,
        enquire_link_interval=None,
        **kwargs,
    )


async def test_pdu_observer_counts_pdus_both_sides() -> None:
    m = Metrics()
    server = SmppServer(_Handler(), port=0, on_pdu=m.pdu_observer("esme"))
    await server.start()
    try:
        client = _client(server.port, on_pdu=m.pdu_observer("upstream"))
        await client.start()
        try:
            await client.wait_bound(5)
            for _ in range(3):
                response = await client.submit_sm(_submit())
                assert response.command_status == CommandStatus.ROK
        finally:
            await client.close()  # unbind, unbind_resp
    finally:
        await server.close()

    def count(side: str, direction: str, command: str) -> float | None:
        labels = {"side": side, "direction": direction, "command": command, "status": "ESME_ROK"}
        return m.registry.get_sample_value("smsgw_smpp_pdus_total", labels)

    for client_side, server_side in (("out", "in"), ("in", "out")):
        for request, times in (("bind_transceiver", 1), ("submit_sm", 3), ("unbind", 1)):
            command = request if client_side == "out" else f"{request}_resp"
            assert count("upstream", client_side, command) == times, (client_side, command)
            assert count("esme", server_side, command) == times, (server_side, command)
    assert_no_personal_data_in_labels(m)


async def test_a_failing_observer_costs_no_connection() -> None:
    calls = 0

    def broken(direction: str, command_id: int, command_status: int) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("observer bug")

    async with SmppServer(_Handler(), port=0, on_pdu=broken) as server:
        client = _client(server.port)
        await client.start()
        try:
            await client.wait_bound(5)
            response = await client.submit_sm(_submit())
            assert response.command_status == CommandStatus.ROK
        finally:
            await client.close()
    assert calls == 1  # then the connection stopped calling it


def _frame(command_id: int, status: int = 0, body: bytes = b"") -> bytes:
    return struct.pack(">IIII", 16 + len(body), command_id, status, 1) + body


@pytest.mark.parametrize("chunk", [1, 3, 15, 16, 17, 40, 10_000])
def test_header_tap_follows_any_split(chunk: int) -> None:
    stream = (
        _frame(CommandId.SUBMIT_SM, body=b"x" * 37)
        + _frame(CommandId.ENQUIRE_LINK)
        + _frame(CommandId.SUBMIT_SM_RESP, CommandStatus.RTHROTTLED, b"\x00")
        + _frame(CommandId.DELIVER_SM, body=b"y" * 200)
    )
    seen: list[tuple[str, int, int]] = []
    tap = _HeaderTap("in", lambda *args: seen.append(args))
    for start in range(0, len(stream), chunk):
        tap.feed(stream[start : start + chunk])
    assert seen == [
        ("in", CommandId.SUBMIT_SM, 0),
        ("in", CommandId.ENQUIRE_LINK, 0),
        ("in", CommandId.SUBMIT_SM_RESP, CommandStatus.RTHROTTLED),
        ("in", CommandId.DELIVER_SM, 0),
    ]


def test_header_tap_stops_at_a_command_length_it_cannot_follow() -> None:
    seen: list[tuple[str, int, int]] = []
    tap = _HeaderTap("in", lambda *args: seen.append(args))
    tap.feed(struct.pack(">IIII", 8, CommandId.SUBMIT_SM, 0, 1) + _frame(CommandId.ENQUIRE_LINK))
    tap.feed(_frame(CommandId.ENQUIRE_LINK))
    assert seen == [("in", CommandId.SUBMIT_SM, 0)]
