"""`smsgw serve`: run the gateway until SIGINT/SIGTERM, then shut down in order."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from gateway.app import Gateway
from gateway.config import Settings

log = logging.getLogger("gateway")


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s level=%(levelname)s logger=%(name)s %(message)s",
        stream=sys.stderr,
    )


async def serve(settings: Settings, *, demo: bool) -> int:
    gateway = Gateway(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Signals only set a flag (as uvicorn does); the shutdown runs here.
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        endpoints = await gateway.start()
    except BaseException:
        await gateway.stop()
        raise
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
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    return 0
