"""The ``smsgw`` command. The only module that reads ``os.environ``."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version

from gateway.config import ConfigError, DatabaseSettings, Settings, load_settings

__all__ = ["main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _version() -> str:
    try:
        return version("smsgw")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


def _parser() -> argparse.ArgumentParser:
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config",
        metavar="FILE",
        help="TOML configuration (default: $SMSGW_CONFIG, else the built-in demo)",
    )

    parser = argparse.ArgumentParser(
        prog="smsgw", description="SMS gateway speaking SMPP 3.4 and HTTP."
    )
    parser.add_argument("--version", action="version", version=f"smsgw {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve",
        parents=[config],
        help="run the gateway until SIGINT/SIGTERM",
        description="Run HTTP API, SMPP server, upstream connectors, dispatcher and scheduler.",
    )
    serve.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level (INFO); numbers are masked and texts left out at INFO",
    )
    serve.add_argument(
        "--log-format", default="kv", choices=["kv", "json"], help="key=value lines or JSON lines"
    )

    db = commands.add_parser("db", help="database administration")
    db_commands = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    db_commands.add_parser(
        "upgrade", parents=[config], help="apply the migrations to the configured database"
    )

    account = commands.add_parser("account", help="account administration")
    account_commands = account.add_subparsers(
        dest="account_command", metavar="ACTION", required=True
    )
    add = account_commands.add_parser(
        "add",
        parents=[config],
        help="create an account and print its API key (once)",
        description="Create an account usable over SMPP (system_id/password) and HTTP.",
    )
    add.add_argument("system_id", metavar="SYSTEM_ID")
    add.add_argument("--password", required=True, metavar="PW")
    add.add_argument("--tps", type=int, default=100, metavar="N", help="messages per second (100)")
    account_commands.add_parser("list", parents=[config], help="list accounts (never secrets)")

    route = commands.add_parser("route", help="the routes of a running gateway")
    route_commands = route.add_subparsers(dest="route_command", metavar="ACTION", required=True)
    route_list = route_commands.add_parser(
        "list",
        parents=[config],
        help="each upstream's health, in-flight, tps, learned quality; --to: the ranking",
        description="Asks the running gateway (http.listen) with admin.api_key.",
    )
    route_list.add_argument("--to", metavar="NUMBER", help="rank the routes for this number")
    route_list.add_argument(
        "--policy", default="balanced", choices=["cheapest", "best_delivery", "balanced"]
    )
    route_list.add_argument("--json", action="store_true", help="print the raw JSON")

    simulator = commands.add_parser(
        "simulator",
        help="standalone SMSC simulator",
        description="An SMSC simulator: the same code the tests and the demo use.",
    )
    simulator.add_argument("--listen", default="127.0.0.1:2776", metavar="HOST:PORT")
    simulator.add_argument("--delivery-ratio", type=float, default=1.0, metavar="R")
    simulator.add_argument("--dlr-delay-ms", type=int, default=100, metavar="MS")
    simulator.add_argument("--intermediate", action="store_true")
    simulator.add_argument("--max-tps", type=int, default=0, metavar="N")
    return parser


def _settings(args: argparse.Namespace, environ: Mapping[str, str]) -> Settings:
    return load_settings(args.config, environ)


async def _prepare_database(settings: Settings, *, migrate: bool) -> None:
    from gateway.migrate import upgrade_async

    if migrate:
        await upgrade_async(settings.database.url)


async def _db_upgrade(settings: Settings) -> int:
    from gateway.migrate import upgrade_async

    await upgrade_async(settings.database.url)
    print(f"database is up to date: {_redacted(settings.database.url)}")
    return EXIT_OK


def _one_off(settings: Settings) -> DatabaseSettings:
    """The database settings for a short command: account administration runs its
    own transactions, so a writer process for the group commit would only cost
    its start."""
    return settings.database.model_copy(update={"writer": "thread"})


async def _account_add(settings: Settings, system_id: str, password: str, tps: int) -> int:
    from gateway.store import AccountExists, Store

    if tps <= 0:
        print("smsgw: --tps must be greater than 0", file=sys.stderr)
        return EXIT_USAGE
    await _prepare_database(settings, migrate=settings.database.auto_migrate)
    store = await Store.open(_one_off(settings))
    try:
        created = await store.create_account(system_id, password, tps=tps)
    except AccountExists as exc:
        print(f"smsgw: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await store.close()
    print(f"account {created.account.system_id} created (tps {created.account.tps})")
    print(f"api_key: {created.api_key}")
    print(f"webhook_secret: {created.account.webhook_secret}")
    print("The API key is shown only now: keep it.")
    return EXIT_OK


async def _account_list(settings: Settings) -> int:
    from gateway.store import Store

    await _prepare_database(settings, migrate=settings.database.auto_migrate)
    store = await Store.open(_one_off(settings))
    try:
        accounts = await store.list_accounts()
    finally:
        await store.close()
    print(f"{'system_id':<16}  {'tps':>6}  {'routing':<13}  created_at")
    for a in accounts:
        created = a.created_at.isoformat(timespec="seconds")
        print(f"{a.system_id:<16}  {a.tps:>6}  {a.routing:<13}  {created}")
    return EXIT_OK


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _serve(
    settings: Settings,
    *,
    demo: bool,
    log_level: str,
    log_format: str,
    reload: Callable[[], Settings],
) -> int:
    from gateway.logs import configure_logging
    from gateway.serve import serve

    configure_logging(log_level, json=log_format == "json")
    return asyncio.run(serve(settings, demo=demo, reload_settings=reload))


async def _simulator(args: argparse.Namespace) -> int:
    import signal

    from gateway.config import parse_listen
    from gateway.simulator import Simulator, SimulatorOptions

    try:
        host, port = parse_listen(args.listen)
        options = SimulatorOptions(
            delivery_ratio=args.delivery_ratio,
            dlr_delay_ms=args.dlr_delay_ms,
            intermediate=args.intermediate,
            max_tps=args.max_tps,
        )
    except ValueError as exc:
        print(f"smsgw simulator: {exc}", file=sys.stderr)
        return EXIT_USAGE
    simulator = Simulator(options, host=host, port=port)
    try:
        await simulator.start()
    except OSError as exc:
        print(f"smsgw simulator: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    shown = f"[{host}]" if ":" in host else host
    print(f"simulator listening on {shown}:{simulator.port}", flush=True)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await simulator.close()
    return EXIT_OK


async def _route_list(settings: Settings, args: argparse.Namespace) -> int:
    import json

    import aiohttp

    from gateway.config import parse_listen

    if settings.admin.api_key is None:
        print("smsgw: admin.api_key is not configured", file=sys.stderr)
        return EXIT_USAGE
    host, port = parse_listen(settings.http.listen)
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    params = {"policy": args.policy} | ({"to": args.to} if args.to else {})
    headers = {"Authorization": f"Bearer {settings.admin.api_key}"}
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://{host}:{port}/v1/routes", params=params, headers=headers) as r,
        ):
            body = await r.json()
    except aiohttp.ClientError as exc:
        print(f"smsgw: the gateway at {host}:{port} does not answer: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if r.status != 200:
        print(f"smsgw: {body.get('error', {}).get('message', r.status)}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(body, indent=2))
        return EXIT_OK
    print(
        f"{'route':<12} {'bound':>5} {'in-flight':>9} {'tps':>6} {'circuit':<9} {'blocked':<10} quality"
    )
    for rt in body["routes"]:
        quality = ", ".join(
            f"+{cc}: {q['delivery_ratio']:.0%} in {q['latency_s']:.1f}s"
            for cc, q in rt["quality"].items()
        )
        print(
            f"{rt['route']:<12} {rt['bound_sessions']:>5} {rt['in_flight']:>9} {rt['tps'] or '-':>6} "
            f"{rt['circuit']:<9} {rt['blocked'] or '-':<10} {quality or '-'}"
        )
    if "ranking" in body:
        print(f"\nranking for {body['to']} ({body['policy']}):")
        for i, c in enumerate(body["ranking"], 1):
            print(f"{i:>2}. {c['route']:<12} price {c['price']:<8} {c['reason']}")
        for e in body["excluded"]:
            print(f"    {e['route']:<12} excluded: {e['reason']}")
    return EXIT_OK


def _run(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.command == "simulator":
        return asyncio.run(_simulator(args))
    settings = _settings(args, environ)
    if args.command == "serve":
        demo = args.config is None and "SMSGW_CONFIG" not in environ
        return _serve(
            settings,
            demo=demo,
            log_level=args.log_level,
            log_format=args.log_format,
            reload=lambda: _settings(args, environ),
        )
    if args.command == "route":
        return asyncio.run(_route_list(settings, args))
    if args.command == "db":
        return asyncio.run(_db_upgrade(settings))
    if args.account_command == "add":
        return asyncio.run(_account_add(settings, args.system_id, args.password, args.tps))
    return asyncio.run(_account_list(settings))


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Entry point of the ``smsgw`` console script; returns the exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return _run(args, os.environ if environ is None else environ)
    except ConfigError as exc:
        print(f"smsgw: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
