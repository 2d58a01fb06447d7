"""The composition root: builds every part from Settings, starts and stops them in order.

Start: migrate, open the store, bootstrap accounts, start in-process
simulators and the upstream connectors, recover and start the dispatcher,
then open the doors (SMPP front, HTTP API) last, so nothing is accepted
before it can be sent.

Stop (SIGINT/SIGTERM, as uvicorn does it): close the doors first (HTTP, then
unbind ESMEs), let the dispatcher finish the submits in flight, unbind the
upstreams, stop the webhook sender, and flush the store's last group commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from aiohttp import web

from gateway.config import Settings, UpstreamSettings, parse_listen
from gateway.dispatch import Dispatcher
from gateway.events import StatusBus
from gateway.http_api import HttpDeps, create_app, start_http
from gateway.lifecycle import Status
from gateway.messages import MessageService
from gateway.metrics import Metrics
from gateway.migrate import upgrade_async
from gateway.ratelimit import TpsLimiter
from gateway.simulator import Simulator, SimulatorOptions
from gateway.smpp_front import SmppFront
from gateway.store import CreatedAccount, StatusChange, Store
from gateway.upstreams import Upstream
from gateway.webhooks import WebhookSender

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where the gateway listens, with the real ports (a configured port 0 is resolved)."""

    http_host: str
    http_port: int
    smpp_host: str
    smpp_port: int


class _LatencyTracker:
    """submitted -> delivered latency per route, from the status changes.

    Remembers when each message was submitted (bounded: the oldest are
    forgotten first), so the delivery histogram needs no database read.
    """

    def __init__(self, metrics: Metrics, limit: int = 200_000) -> None:
        self.metrics = metrics
        self.limit = limit
        self._submitted: OrderedDict[str, float] = OrderedDict()

    def __call__(self, changes: list[StatusChange]) -> None:
        for change in changes:
            route = change.route or ""
            self.metrics.child(self.metrics.message_status, change.status.value, route).inc()
            if change.status is Status.SUBMITTED:
                self._submitted[change.message_id] = change.at.timestamp()
                if len(self._submitted) > self.limit:
                    self._submitted.popitem(last=False)
            elif change.status is Status.DELIVERED:
                submitted = self._submitted.pop(change.message_id, None)
                if submitted is not None:
                    self.metrics.child(self.metrics.delivery_latency, route).observe(
                        max(0.0, change.at.timestamp() - submitted)
                    )
            elif change.status.value in ("undelivered", "expired", "rejected", "failed"):
                self._submitted.pop(change.message_id, None)


class Gateway:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self.bus = StatusBus()
        self.limiter = TpsLimiter()
        self.created_accounts: list[CreatedAccount] = []
        self.simulators: dict[str, Simulator] = {}
        self.upstreams: list[Upstream] = []
        self._store: Store | None = None
        self._dispatcher: Dispatcher | None = None
        self._front: SmppFront | None = None
        self._webhooks: WebhookSender | None = None
        self._http: web.AppRunner | None = None
        self.endpoints: Endpoints | None = None
        self.started_at = time.monotonic()

    @property
    def store(self) -> Store:
        assert self._store is not None, "the gateway is not started"
        return self._store

    @property
    def dispatcher(self) -> Dispatcher:
        assert self._dispatcher is not None, "the gateway is not started"
        return self._dispatcher

    async def start(self) -> Endpoints:
        s = self.settings
        if s.database.auto_migrate:
            await upgrade_async(s.database.url)
        self._store = store = await Store.open(s.database)
        self.created_accounts = await store.ensure_accounts(s.accounts)
        self.bus.subscribe(_LatencyTracker(self.metrics))

        self._dispatcher = dispatcher = Dispatcher(store, self.bus, self.metrics, s.dispatch)
        messages = MessageService(store, dispatcher, self.metrics)

        for upstream_settings in s.upstreams:
            self.upstreams.append(await self._upstream(upstream_settings))
        for upstream in self.upstreams:
            await upstream.start()
        await dispatcher.start(self.upstreams)

        self._webhooks = WebhookSender(store, self.metrics, s.webhooks)
        webhooks = self._webhooks
        self.bus.subscribe(
            lambda changes: webhooks.wake() if any(c.has_callback for c in changes) else None
        )
        await webhooks.start()

        smpp_host, smpp_port = parse_listen(s.smpp.listen)
        self._front = SmppFront(store, messages, self.bus, self.metrics, self.limiter, s.smpp)
        await self._front.start(smpp_host, smpp_port)

        http_host, http_port = parse_listen(s.http.listen)
        app = create_app(
            HttpDeps(
                store=store,
                messages=messages,
                metrics=self.metrics,
                limiter=self.limiter,
                readiness=self.readiness,
            )
        )
        self._http, bound_http_port = await start_http(app, http_host, http_port)
        self.endpoints = Endpoints(http_host, bound_http_port, smpp_host, self._front.port)
        return self.endpoints

    async def _upstream(self, settings: UpstreamSettings) -> Upstream:
        response_timeout = self.settings.dispatch.submit_timeout_s
        if settings.kind == "simulator":
            sim_settings = settings.simulator
            options = SimulatorOptions(
                delivery_ratio=sim_settings.delivery_ratio if sim_settings else 1.0,
                dlr_delay_ms=sim_settings.dlr_delay_ms if sim_settings else 100,
                intermediate=sim_settings.intermediate if sim_settings else False,
                max_tps=sim_settings.max_tps if sim_settings else 0,
            )
            simulator = Simulator(options, host="127.0.0.1", port=0)
            await simulator.start()
            self.simulators[settings.name] = simulator
            return Upstream(
                settings,
                self.store,
                self.bus,
                self.metrics,
                host="127.0.0.1",
                port=simulator.port,
                response_timeout=response_timeout,
            )
        return Upstream(
            settings, self.store, self.bus, self.metrics, response_timeout=response_timeout
        )

    async def readiness(self) -> list[str]:
        """Why the gateway is not ready (empty: ready): the database and a bound upstream."""
        reasons: list[str] = []
        try:
            await asyncio.wait_for(self.store.ping(), timeout=2.0)
        except Exception as exc:
            reasons.append(f"database: {type(exc).__name__}")
        if not any(u.bound for u in self.upstreams):
            reasons.append("no upstream is bound")
        return reasons

    async def stop(self, timeout: float = 5.0) -> None:
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        if self._front is not None:
            await self._front.close(timeout)
            self._front = None
        if self._dispatcher is not None:
            await self._dispatcher.close(timeout)
        for upstream in self.upstreams:
            await upstream.close()
        for simulator in self.simulators.values():
            await simulator.close()
        if self._webhooks is not None:
            await self._webhooks.close()
            self._webhooks = None
        if self._store is not None:
            await self._store.close()
            self._store = None

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()
