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
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from gateway import admin_api, reports
from gateway.admin_api import AdminDeps
from gateway.config import Settings, UpstreamSettings, parse_listen
from gateway.dispatch import Dispatcher
from gateway.events import StatusBus
from gateway.http_api import HttpDeps, create_app, start_http
from gateway.lifecycle import FINAL, Status
from gateway.messages import MessageService
from gateway.metrics import Metrics
from gateway.migrate import upgrade_async
from gateway.mo import MoRouter
from gateway.mqtt import MqttPublisher
from gateway.ratelimit import TpsLimiter
from gateway.routes import RouteTable, load_routes
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
            if change.detail.get("matched_late"):
                self.metrics.child(self.metrics.receipts, route, "matched_late").inc()
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
            elif change.status in FINAL:
                self._submitted.pop(change.message_id, None)


class Gateway:
    def __init__(
        self, settings: Settings, *, reload_settings: Callable[[], Settings] | None = None
    ) -> None:
        """`reload_settings` reads the configuration again (SIGHUP, POST /v1/routes/reload)."""
        self.settings = settings
        self._reload_settings = reload_settings
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
        self._mqtt: MqttPublisher | None = None
        self._http: web.AppRunner | None = None
        self.endpoints: Endpoints | None = None

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
        store.committer.on_commit = self.metrics.observe_commit
        store.committer.on_failure = self.metrics.observe_write_failure
        if s.mqtt is not None:
            # Before anything can change a status (recovery, the fronts): every
            # transition from here on gets its outbox row.
            self._mqtt = mqtt = MqttPublisher(store, s.mqtt, self.metrics)
            await mqtt.start()
            self.bus.subscribe(mqtt.wake)
            self.metrics.mqtt_pending.set_function(lambda: mqtt.pending)
            self.metrics.mqtt_published.set_function(lambda: mqtt.published)
            self.metrics.mqtt_connected.set_function(lambda: 1 if mqtt.connected.is_set() else 0)
        self.created_accounts = await store.ensure_accounts(s.accounts)
        self.bus.subscribe(_LatencyTracker(self.metrics))

        self.routes = RouteTable(load_routes(s.upstreams), s.routing)
        self._dispatcher = dispatcher = Dispatcher(
            store, self.bus, self.metrics, s.dispatch, self.routes, s.routing
        )
        messages = MessageService(store, dispatcher, self.metrics)

        for upstream_settings in s.upstreams:
            self.upstreams.append(await self._upstream(upstream_settings))
        self.mo = MoRouter(s.accounts, self._mqtt)
        for upstream in self.upstreams:
            upstream.on_mo = self.mo.handle
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
        admin_api.register(
            app,
            AdminDeps(
                api_key=s.admin.api_key,
                routes=self.routes,
                reload=self.reload,
                tps={u.name: u.tps for u in s.upstreams},
            ),
        )
        reports.register(app, admin_api_key=s.admin.api_key)
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

    def reload(self) -> str:
        """Read the configuration again and take its prices and rules."""
        settings = self._reload_settings() if self._reload_settings else self.settings
        return self.reload_routes(settings)

    def reload_routes(self, settings: Settings) -> str:
        """New prices and rules (SIGHUP, POST /v1/routes/reload) without a restart.

        Upstreams themselves (hosts, binds) are not added or removed: that needs
        a restart. A bad price file raises PriceError and changes nothing.
        """
        running = {u.name for u in self.upstreams}
        wanted = [u for u in settings.upstreams if u.name in running]
        routes = load_routes(wanted)
        self.routes.reload(routes)
        missing = running - {u.name for u in wanted}
        note = f"; not in the new configuration, kept: {sorted(missing)}" if missing else ""
        log.info("routes reloaded: %d upstreams%s", len(routes), note)
        return f"reloaded {len(routes)} routes{note}"

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
        if self._mqtt is not None:
            await self._mqtt.close()
            self._mqtt = None
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
