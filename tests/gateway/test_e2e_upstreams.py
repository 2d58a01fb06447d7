"""Upstreams that misbehave, through a whole gateway: every accepted message still ends final."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import smpp
from gateway.simulator import Simulator, SimulatorOptions
from smpp.aio import SmppClient

from .e2e import ACME, base_url, bearer, postgres_database, running, settings_for, wait_counts

WAIT = 10.0


def _upstream(simulator: Simulator, name: str = "up", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": "smpp",
        "host": "127.0.0.1",
        "port": simulator.port,
        "system_id": "gw",
        "password": "pw",
        "window": 10,
        "tps": 100000,
        "prices": {"default": 0.01},
        **extra,
    }


async def _post(http: aiohttp.ClientSession, url: str, n: int) -> list[str]:
    async def one(i: int) -> str:
        async with http.post(
            f"{url}/v1/messages",
            headers=bearer(),
            json={"to": "+34600123456", "from": "ACME", "text": f"pick-up notice {i}"},
        ) as r:
            assert r.status == 202, await r.text()
            return str((await r.json())["id"])

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def test_receipts_before_submit_sm_resp_with_other_id_forms_are_matched(
    tmp_path: Path,
) -> None:
    # The receipt comes before the submit_sm_resp, and the upstream gives the
    # id in hex in the response and in decimal in the receipt (Kannel's msg-id-type).
    options = SimulatorOptions(
        dlr_delay_ms=0, receipt_before_response=True, id_format="hex", receipt_id_format="decimal"
    )
    async with Simulator(options) as simulator:
        settings = settings_for(tmp_path, upstreams=[_upstream(simulator)])
        async with running(settings) as gateway, aiohttp.ClientSession() as http:
            ids = await _post(http, base_url(gateway), 50)
            counts = await wait_counts(gateway, lambda c: c.get("delivered", 0) == 50)
            assert counts == {"delivered": 50}
            receipts = gateway.metrics.receipts
            seen = sum(
                receipts.labels("up", outcome)._value.get()  # type: ignore[attr-defined]
                for outcome in ("matched", "held")
            )
            assert seen == 50  # each receipt taken once, matched at once or held then applied
            record = await gateway.store.get_message(ids[0])
            assert record is not None and record.delivered_at is not None


async def test_a_throttling_upstream_is_slowed_not_abandoned(tmp_path: Path) -> None:
    # 300 messages over a limit of 50/s with a second of burst: throttled unless the
    # gateway takes over 5 s to send them (unthrottled it takes one or two).
    async with Simulator(SimulatorOptions(dlr_delay_ms=5, max_tps=50)) as simulator:
        settings = settings_for(tmp_path, upstreams=[_upstream(simulator)])
        async with running(settings) as gateway, aiohttp.ClientSession() as http:
            await _post(http, base_url(gateway), 300)
            counts = await wait_counts(gateway, lambda c: c.get("delivered", 0) == 300, timeout=30)
            assert counts == {"delivered": 300}
            async with http.get(f"{base_url(gateway)}/metrics") as r:
                exposition = await r.text()
        assert simulator.throttled > 0
        # The reason is spelled as smsgw_smpp_pdus_total spells the status.
        throttled = re.search(
            r'^smsgw_upstream_submit_errors_total\{reason="ESME_RTHROTTLED",route="up"\} (\S+)$',
            exposition,
            re.MULTILINE,
        )
        assert throttled is not None and float(throttled.group(1)) > 0, exposition


async def test_undelivered_and_permanent_errors_end_final(tmp_path: Path) -> None:
    async with Simulator(SimulatorOptions(dlr_delay_ms=5, delivery_ratio=0.0)) as simulator:
        settings = settings_for(tmp_path, upstreams=[_upstream(simulator)])
        async with running(settings) as gateway, aiohttp.ClientSession() as http:
            ids = await _post(http, base_url(gateway), 20)
            await wait_counts(gateway, lambda c: c.get("undelivered", 0) == 20)
            async with http.get(f"{base_url(gateway)}/v1/messages/{ids[0]}", headers=bearer()) as r:
                body = await r.json()
            assert body["status"] == "undelivered"
            assert body["error"]
            assert body["delivered_at"] is None


async def test_failover_to_the_other_upstream_when_one_goes_down(tmp_path: Path) -> None:
    async with (
        Simulator(SimulatorOptions(dlr_delay_ms=5)) as first,
        Simulator(SimulatorOptions(dlr_delay_ms=5)) as second,
    ):
        settings = settings_for(tmp_path, upstreams=[_upstream(first, "a"), _upstream(second, "b")])
        async with running(settings) as gateway, aiohttp.ClientSession() as http:
            await first.stop_listening()  # a crash of upstream a: connections aborted
            ids = await _post(http, base_url(gateway), 100)
            await wait_counts(gateway, lambda c: c.get("delivered", 0) == 100)
            routes = {(await gateway.store.get_message(i)).route for i in ids}  # type: ignore[union-attr]
            assert routes == {"b"}


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def test_smpp_load_with_drops_on_both_databases(tmp_path: Path, database: str) -> None:
    async with Simulator(SimulatorOptions(dlr_delay_ms=5, drop_every=131)) as simulator:
        if database == "postgres":
            async with postgres_database() as url:
                await _smpp_load(settings_for(tmp_path, url=url, upstreams=[_upstream(simulator)]))
        else:
            await _smpp_load(settings_for(tmp_path, upstreams=[_upstream(simulator)]))


async def _smpp_load(settings: Any, total: int = 400) -> None:
    async with running(settings) as gateway:
        assert gateway.endpoints is not None
        receipts: list[str] = []
        done = asyncio.Event()

        async def on_deliver_sm(pdu: smpp.DeliverSm) -> int:
            assert pdu.receipted_message_id is not None
            receipts.append(pdu.receipted_message_id)
            if len(receipts) == total:
                done.set()
            return 0

        esme = SmppClient(
            "127.0.0.1",
            gateway.endpoints.smpp_port,
            system_id=ACME["system_id"],
            password=ACME["password"],
            window=50,
            on_deliver_sm=on_deliver_sm,
        )
        async with esme:
            await esme.wait_bound(WAIT)

            async def submit(i: int) -> str:
                resp = await esme.submit_sm(
                    smpp.SubmitSm(
                        source_addr="ACME",
                        source_addr_ton=5,
                        dest_addr_ton=1,
                        dest_addr_npi=1,
                        destination_addr="34600123456",
                        registered_delivery=1,
                        short_message=f"overdraft alert {i}".encode(),
                    )
                )
                assert resp.command_status == 0
                return resp.message_id

            ids = await asyncio.gather(*(submit(i) for i in range(total)))
            await asyncio.wait_for(done.wait(), 60)
        assert sorted(receipts) == sorted(ids)  # one receipt per message, with its id
        metrics = gateway.metrics.render().decode()
        for name in (
            "smsgw_messages_accepted_total",
            "smsgw_message_status_total",
            "smsgw_submit_latency_seconds_bucket",
            "smsgw_delivery_latency_seconds_bucket",
            "smsgw_upstream_bound",
            "smsgw_upstream_inflight",
            "smsgw_smpp_sessions",
            "smsgw_queue_depth",
            "smsgw_route_cost_total",
        ):
            assert name in metrics, name
        assert 'smsgw_messages_accepted_total{account="acme",interface="smpp"} 400.0' in metrics
        assert "34600123456" not in metrics


async def test_several_sessions_to_one_upstream_share_the_traffic(tmp_path: Path) -> None:
    async with Simulator(SimulatorOptions(dlr_delay_ms=5)) as simulator:
        settings = settings_for(tmp_path, upstreams=[_upstream(simulator, sessions=3)])
        async with running(settings) as gateway, aiohttp.ClientSession() as http:
            (upstream,) = gateway.upstreams
            async with asyncio.timeout(WAIT):
                while upstream.bound_sessions < 3:
                    await asyncio.sleep(0.01)
            await _post(http, base_url(gateway), 90)
            await wait_counts(gateway, lambda c: c.get("delivered", 0) == 90)
            metrics = gateway.metrics.render().decode()
            assert 'smsgw_upstream_bound{route="up"} 3.0' in metrics
            await upstream.clients[0].close()  # one session goes away: the others carry on
            await _post(http, base_url(gateway), 30)
            await wait_counts(gateway, lambda c: c.get("delivered", 0) == 120)
        assert simulator.binds >= 3
