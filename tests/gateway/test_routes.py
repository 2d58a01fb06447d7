"""The gateway's routing glue: price files, what the selector is told, `smsgw route list`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import RoutingSettings, load_settings, parse_settings
from gateway.routes import PriceError, RouteTable, SubmitOutcome, load_routes
from gateway.simulator import Simulator, SimulatorOptions

from .e2e import running, settings_for

ROOT = Path(__file__).resolve().parents[2]


def _upstream(**extra: object) -> dict[str, object]:
    return {"name": "a", "kind": "smpp", "port": 1, "system_id": "gw", **extra}


def test_the_shipped_example_configuration_loads_its_price_file() -> None:
    settings = load_settings(str(ROOT / "config" / "gateway.toml"), {})
    routes = {r.name: r for r in load_routes(settings.upstreams, base=ROOT)}
    assert routes["agg-a"].prices.price_for("34600123456") == 0.040  # inline, longest prefix
    assert routes["agg-b"].prices.price_for("34600123456") == 0.038  # from the CSV
    assert routes["agg-b"].prices.price_for("81312345678") == 0.070  # its default row


def test_a_price_file_overrides_inline_prices_and_bad_lines_are_named(tmp_path: Path) -> None:
    prices = tmp_path / "p.csv"
    prices.write_text("prefix,price\n34,0.020\n")
    settings = parse_settings(
        {
            "upstreams": [
                _upstream(prices={"default": 0.1, "34": 0.05, "49": 0.06}, prices_file=str(prices))
            ]
        }
    )
    (route,) = load_routes(settings.upstreams)
    assert route.prices.price_for("34600123456") == 0.020
    assert route.prices.price_for("4915112345678") == 0.06
    assert route.prices.price_for("81312345678") == 0.1
    prices.write_text("prefix,price\n34,abc\n")
    with pytest.raises(PriceError, match="line 2"):
        load_routes(settings.upstreams)
    prices.unlink()
    with pytest.raises(PriceError, match="cannot be read"):
        load_routes(settings.upstreams)


def test_without_a_default_a_route_serves_only_what_it_prices() -> None:
    settings = parse_settings({"upstreams": [_upstream(prices={"34": 0.05})]})
    table = RouteTable(load_routes(settings.upstreams), RoutingSettings())
    table.bound("a", 1, 10)
    assert table.select(
        "+34600123456", policy="cheapest", sender="ACME", max_price=None
    ).routes == ("a",)
    selection = table.select("+4915112345678", policy="cheapest", sender="ACME", max_price=None)
    assert selection.routes == () and not selection.retry_later
    assert str(selection.excluded[0].reason) == "no_price"


def test_a_dropped_session_is_one_failure_for_the_breaker_not_one_per_submit() -> None:
    settings = parse_settings({"upstreams": [_upstream(prices={"default": 0.05})]})
    table = RouteTable(load_routes(settings.upstreams), RoutingSettings(breaker_failures=2))
    table.bound("a", 1, 50)
    for _ in range(40):
        table.submitting("a")
    for _ in range(40):
        table.lost("a", connection=1)  # forty submits lost with one session
    health = table.selector.health("a").snapshot(table.clock())
    assert health.in_flight == 0
    assert health.consecutive_failures == 1
    assert str(health.circuit) == "closed"
    table.submitting("a")
    table.answered("a", SubmitOutcome.TIMEOUT)
    assert str(table.selector.health("a").snapshot(table.clock()).circuit) == "open"


async def test_route_list_asks_the_running_gateway(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with Simulator(SimulatorOptions(dlr_delay_ms=5)) as simulator:
        upstream = {
            "name": "up",
            "kind": "smpp",
            "host": "127.0.0.1",
            "port": simulator.port,
            "system_id": "gw",
            "password": "pw",
            "prices": {"default": 0.02},
        }
        settings = settings_for(tmp_path, upstreams=[upstream], admin={"api_key": "admin-key-01"})
        async with running(settings) as gateway:
            assert gateway.endpoints is not None
            config = tmp_path / "cli.toml"
            config.write_text(
                f'[http]\nlisten = "127.0.0.1:{gateway.endpoints.http_port}"\n'
                '[admin]\napi_key = "admin-key-01"\n'
            )
            while not gateway.upstreams[0].bound:
                await asyncio.sleep(0.01)
            code = await asyncio.to_thread(
                main, ["route", "list", "--config", str(config), "--to", "+34600123456"], {}
            )
    out = capsys.readouterr().out
    assert code == 0
    assert "up" in out and "ranking for +34600123456" in out


async def test_sighup_reloads_prices_in_a_running_smsgw_serve(tmp_path: Path) -> None:
    import os
    import signal
    import socket
    import sys

    import aiohttp

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    http_port, smpp_port = free_port(), free_port()
    prices = tmp_path / "up.csv"
    prices.write_text("prefix,price\n34,0.050\n")
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[database]
url = "sqlite+aiosqlite:///{tmp_path / "g.db"}"
[http]
listen = "127.0.0.1:{http_port}"
[smpp]
listen = "127.0.0.1:{smpp_port}"
[admin]
api_key = "admin-key-01"
[[upstreams]]
name = "up"
kind = "simulator"
prices_file = "{prices}"
"""
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    with (tmp_path / "serve.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--config",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            env=env,
        )
    url = f"http://127.0.0.1:{http_port}/v1/routes"
    auth = {"Authorization": "Bearer admin-key-01"}

    async def first_price(http: aiohttp.ClientSession) -> float:
        async with http.get(url, params={"to": "+34600123456"}, headers=auth) as r:
            return float((await r.json())["ranking"][0]["price"])

    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):
                while True:
                    try:
                        assert await first_price(http) == 0.050
                        break
                    except (aiohttp.ClientError, KeyError, IndexError):
                        await asyncio.sleep(0.05)
            prices.write_text("prefix,price\n34,0.020\n")
            process.send_signal(signal.SIGHUP)
            async with asyncio.timeout(10):
                while await first_price(http) != 0.020:
                    await asyncio.sleep(0.05)
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
