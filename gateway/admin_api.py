"""Admin endpoints: the routes' health and ranking, and reloading prices.

`GET /v1/routes[?to=+34...&policy=...]` and `POST /v1/routes/reload`, with
`Authorization: Bearer <admin.api_key>`. Without an admin key configured the
endpoints answer 404, as if they did not exist.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from gateway.config import ConfigError
from gateway.http_api import ApiError
from gateway.messages import SubmissionError, parse_destination
from gateway.routes import PriceError, RouteTable
from routing.selector import Policy

__all__ = ["AdminDeps", "register"]


@dataclass(frozen=True)
class AdminDeps:
    api_key: str | None
    routes: RouteTable
    reload: Callable[[], str]  # raises PriceError / ConfigError with the reason
    tps: dict[str, int]  # configured tps per upstream, for display


_ADMIN = web.AppKey("smsgw_admin", AdminDeps)


def register(app: web.Application, deps: AdminDeps) -> None:
    app[_ADMIN] = deps
    app.router.add_get("/v1/routes", list_routes, allow_head=False)
    app.router.add_post("/v1/routes/reload", reload_routes)


def _authorized(request: web.Request) -> AdminDeps:
    deps = request.app[_ADMIN]
    if deps.api_key is None:
        raise ApiError(404, "not_found", "no such endpoint")
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), deps.api_key.encode()):
        raise ApiError(
            401,
            "unauthorized",
            "the admin API key is required",
            headers=[("WWW-Authenticate", 'Bearer realm="smsgw admin"')],
        )
    return deps


async def list_routes(request: web.Request) -> web.Response:
    deps = _authorized(request)
    routes = deps.routes.snapshot()
    for route in routes:
        route["tps"] = deps.tps.get(str(route["route"]))
    body: dict[str, Any] = {"routes": routes}
    to = request.query.get("to")
    if to is not None:
        try:
            destination = parse_destination(to, field="to")
        except SubmissionError as exc:
            raise ApiError(400, exc.code, exc.message, field="to") from None
        policy = request.query.get("policy", Policy.BALANCED.value)
        if policy not in {p.value for p in Policy}:
            raise ApiError(400, "invalid_field", f"unknown policy {policy!r}", field="policy")
        sender = request.query.get("from", "")
        selection = deps.routes.ranking(destination, policy=policy, sender=sender)
        body["to"] = destination
        body["policy"] = policy
        body["country"] = selection.country
        body["ranking"] = [
            {
                "route": c.route,
                "price": c.price,
                "delivery_ratio": round(c.delivery_ratio, 4),
                "latency_s": round(c.latency_s, 3),
                "score": round(c.score, 6),
                "reason": c.reason,
            }
            for c in selection.candidates
        ]
        body["excluded"] = [
            {"route": e.route, "reason": str(e.reason), "price": e.price}
            for e in selection.excluded
        ]
    return web.json_response(body)


async def reload_routes(request: web.Request) -> web.Response:
    deps = _authorized(request)
    try:
        result = deps.reload()
    except (PriceError, ConfigError, ValueError) as exc:
        raise ApiError(422, "invalid_prices", str(exc)) from None
    return web.json_response({"status": "reloaded", "detail": result})
