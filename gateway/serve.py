"""`smsgw serve`: run the gateway until SIGINT/SIGTERM, then shut down in order."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sys
from collections.abc import Callable

from gateway.app import Gateway
from gateway.config import Settings

log = logging.getLogger("gateway")


def _reload(gateway: Gateway) -> None:
    """SIGHUP: new prices and rules from the configuration, without a restart."""
    try:
        log.info("SIGHUP: %s", gateway.reload())
    except Exception as exc:  # a bad file keeps the old prices; say why
        log.error("SIGHUP: prices not reloaded: %s", exc)


async def serve(
    settings: Settings, *, demo: bool, reload_settings: Callable[[], Settings] | None = None
) -> int:
    gateway = Gateway(settings, reload_settings=reload_settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signals only set a flag (as uvicorn does); the shutdown runs here.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: _reload(gateway))
    try:
        endpoints = await gateway.start()
    except BaseException:
        await gateway.stop()
        raise
    # What start-up allocated lives as long as the process: keep the cyclic
    # garbage collector from walking it again and again (its full collections
    # were the longest pauses in submit_sm_resp latency), and let it run less
    # often on the young objects each message makes.
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    http = f"http://{endpoints.http_host}:{endpoints.http_port}"
    print(f"smsgw serving HTTP on {http} and SMPP on {endpoints.smpp_host}:{endpoints.smpp_port}")
    for created in gateway.created_accounts:
        print(f"account {created.account.system_id} created; its API key: {created.api_key}")
    if demo:
        for account in settings.accounts:
            print(
                f"demo account: system_id={account.system_id} password={account.password} "
                f"api_key={account.api_key}"
            )
        print(
            f"try: curl -s -H 'Authorization: Bearer {settings.accounts[0].api_key}' "
            f"-H 'Content-Type: application/json' "
            f'-d \'{{"to": "+34600123456", "from": "ACME", "text": "Your invoice is due"}}\' '
            f"{http}/v1/messages"
            if settings.accounts
            else ""
        )
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await gateway.stop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(signum)
    return 0
