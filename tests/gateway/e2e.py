"""Helpers for end-to-end tests: a whole gateway in-process, on real sockets."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

import smpp
from gateway.app import Gateway
from gateway.config import Settings, parse_settings
from gateway.lifecycle import FINAL
from smpp.aio import SmppClient

ACME = {"system_id": "acme", "password": "acme-pw", "api_key": "acme-key-0001", "tps": 100000}
OTHER = {"system_id": "other", "password": "other-pw", "api_key": "other-key-001", "tps": 100}


def settings_for(
    tmp_path: Path,
    *,
    url: str | None = None,
    upstreams: list[dict[str, Any]] | None = None,
    **sections: Any,
) -> Settings:
    raw: dict[str, Any] = {
        "database": {"url": url or f"sqlite+aiosqlite:///{tmp_path / 'gateway.db'}"},
        "http": {"listen": "127.0.0.1:0"},
        "smpp": {"listen": "127.0.0.1:0"},
        "dispatch": {"poll_interval_ms": 50, "retry_backoff_ms": 20},
        "webhooks": {"initial_backoff_s": 0.05, "max_backoff_s": 0.2},
        "accounts": [ACME, OTHER],
        "upstreams": upstreams
        or [
            {
                "name": "sim",
                "kind": "simulator",
                "window": 20,
                "tps": 100000,
                "prices": {"default": 0.02, "34": 0.015},
                "simulator": {"dlr_delay_ms": 20, "intermediate": True},
            }
        ],
    }
    for name, section in sections.items():
        if isinstance(section, dict):
            raw.setdefault(name, {}).update(section)
        else:
            raw[name] = section
    return parse_settings(raw, "test")


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Gateway]:
    gateway = Gateway(settings)
    try:
        await gateway.start()
        yield gateway
    finally:
        await gateway.stop()


def bearer(api_key: str = ACME["api_key"]) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def basic(system_id: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{system_id}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def base_url(gateway: Gateway) -> str:
    assert gateway.endpoints is not None
    return f"http://127.0.0.1:{gateway.endpoints.http_port}"


async def wait_final(
    http: aiohttp.ClientSession, gateway: Gateway, message_id: str, timeout: float = 10.0
) -> dict[str, Any]:
    """GET the message until its status is final."""
    async with asyncio.timeout(timeout):
        while True:
            async with http.get(
                f"{base_url(gateway)}/v1/messages/{message_id}", headers=bearer()
            ) as r:
                body: dict[str, Any] = await r.json()
            if body["status"] in {s.value for s in FINAL}:
                return body
            await asyncio.sleep(0.02)


@asynccontextmanager
async def acme_esme(
    gateway: Gateway,
    bind: str = "transmitter",
    window: int = 100,
    on_deliver_sm: Any = None,
) -> AsyncIterator[SmppClient]:
    """An ESME bound to the gateway's SMPP front as the ACME account."""
    assert gateway.endpoints is not None
    esme = SmppClient(
        "127.0.0.1",
        gateway.endpoints.smpp_port,
        system_id=ACME["system_id"],
        password=ACME["password"],
        bind=bind,
        window=window,
        on_deliver_sm=on_deliver_sm,
    )
    async with esme:
        await esme.wait_bound(10)
        yield esme


def reminder(text: str, to: str = "34600123456", **fields: Any) -> smpp.SubmitSm:
    """A submit_sm from the alphanumeric sender ACME to an international number."""
    return smpp.SubmitSm(
        source_addr="ACME",
        source_addr_ton=5,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=to,
        short_message=text.encode(),
        **fields,
    )


async def wait_counts(gateway: Gateway, predicate: Any, timeout: float = 30.0) -> dict[str, int]:
    """Poll the store's counts by status until `predicate(counts)` holds."""
    async with asyncio.timeout(timeout):
        while True:
            counts = {s.value: n for s, n in (await gateway.store.count_by_status()).items()}
            if predicate(counts):
                return counts
            await asyncio.sleep(0.05)


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A fresh PostgreSQL database of its own (the gateway migrates it); dropped afterwards.

    Skipped with the reason when PostgreSQL cannot be reached, required under CI=true
    (see conftest).
    """
    import uuid

    import asyncpg

    from .conftest import PG_DATABASE, PG_HOST, PG_PORT, _find_pg_user

    user = await _find_pg_user()
    name = f"smsgw_e2e_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=PG_DATABASE)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield f"postgresql+asyncpg://{user}@{PG_HOST}:{PG_PORT}/{name}"
    finally:
        admin = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=user, database=PG_DATABASE)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
