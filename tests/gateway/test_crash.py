"""Issue 3, test 4: SIGKILL in the middle of a load; nothing acknowledged is lost.

The gateway runs as a real `smsgw serve` process against a simulator in this
test process (so the upstream, and the receipts it still owes, outlive the
gateway). An ESME submits 2,000 messages; the gateway is killed with SIGKILL
when about half are acknowledged, then started again on the same database.
Every message that got a submit_sm_resp ROK must reach a final status.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest

import smpp
from gateway.lifecycle import FINAL
from gateway.simulator import Simulator, SimulatorOptions
from smpp.aio import SmppAioError, SmppClient

TOTAL = 2000
KILL_AFTER = 900


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(tmp_path: Path, http_port: int, smpp_port: int, upstream_port: int) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path / "crash.db"}"

[http]
listen = "127.0.0.1:{http_port}"

[smpp]
listen = "127.0.0.1:{smpp_port}"

[dispatch]
poll_interval_ms = 50
retry_backoff_ms = 20

[[accounts]]
system_id = "acme"
password = "acme-pw"
api_key = "acme-key-0001"
tps = 100000

[[upstreams]]
name = "up"
host = "127.0.0.1"
port = {upstream_port}
system_id = "gw"
password = "pw"
window = 50
tps = 100000
prices = {{ "default" = 0.01 }}
"""
    )
    return path


async def _start_gateway(config: Path, http_port: int, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
    async with aiohttp.ClientSession() as http:
        async with asyncio.timeout(30):
            while True:
                if process.returncode is not None:
                    raise AssertionError(
                        f"gateway exited with {process.returncode}: {log.read_text()[-2000:]}"
                    )
                try:
                    async with http.get(f"http://127.0.0.1:{http_port}/readyz") as r:
                        if r.status == 200:
                            return process
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_sigkill_during_a_load_loses_no_acknowledged_message(tmp_path: Path) -> None:
    upstream_port = _free_port()
    simulator = Simulator(SimulatorOptions(dlr_delay_ms=50), port=upstream_port)
    await simulator.start()
    http_port, smpp_port = _free_port(), _free_port()
    config = _config(tmp_path, http_port, smpp_port, upstream_port)
    log = tmp_path / "gateway.log"
    acknowledged: list[str] = []
    gateway = await _start_gateway(config, http_port, log)
    try:
        esme = SmppClient(
            "127.0.0.1",
            smpp_port,
            system_id="acme",
            password="acme-pw",
            bind="transmitter",
            window=100,
            reconnect=False,
            response_timeout=5.0,
        )
        await esme.start()
        await esme.wait_bound(10)
        killed = asyncio.Event()

        async def submit(i: int) -> None:
            try:
                resp = await esme.submit_sm(
                    smpp.SubmitSm(
                        source_addr="ACME",
                        source_addr_ton=5,
                        dest_addr_ton=1,
                        dest_addr_npi=1,
                        destination_addr="34600123456",
                        short_message=f"recall notice {i}".encode(),
                    )
                )
            except SmppAioError:
                return  # not acknowledged: the gateway died first
            if resp.command_status == 0:
                acknowledged.append(resp.message_id)
                if len(acknowledged) >= KILL_AFTER and not killed.is_set():
                    killed.set()
                    gateway.send_signal(signal.SIGKILL)

        await asyncio.gather(*(submit(i) for i in range(TOTAL)))
        await esme.close(timeout=0.5)
        assert killed.is_set(), "the load ended before the kill"
        await gateway.wait()
        assert gateway.returncode == -signal.SIGKILL
        assert KILL_AFTER <= len(acknowledged) < TOTAL

        gateway = await _start_gateway(config, http_port, log)
        pending = set(acknowledged)
        final = {s.value for s in FINAL}
        statuses: dict[str, str] = {}
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(90):
                while pending:
                    for message_id in list(pending):
                        async with http.get(
                            f"http://127.0.0.1:{http_port}/v1/messages/{message_id}",
                            headers={"Authorization": "Bearer acme-key-0001"},
                        ) as r:
                            assert r.status == 200, f"acknowledged {message_id} is gone"
                            status = (await r.json())["status"]
                        if status in final:
                            statuses[message_id] = status
                            pending.discard(message_id)
                    if pending:
                        await asyncio.sleep(0.2)
        assert set(statuses.values()) == {"delivered"}
    finally:
        if gateway.returncode is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(gateway.wait(), 15)
            except TimeoutError:
                gateway.kill()
                await gateway.wait()
        await simulator.close()
    assert gateway.returncode in (0, -signal.SIGKILL)
