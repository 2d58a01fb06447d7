"""`python -m gateway.bench`: end-to-end throughput and submit_sm_resp latency, on SQLite.

Three processes on 127.0.0.1, as in production: `smsgw simulator` (the
upstream SMSC), `smsgw serve` (the gateway, durable SQLite in a temporary
directory) and this process as the load-generating ESME (a transceiver).

With `--postgres URL` (for instance
`postgresql+asyncpg://postgres@127.0.0.1:5432/test`) the gateway uses a
database of its own created on that server for the run, and dropped after it;
the CPU of the server's processes is printed too. With `--upstreams N` the
gateway routes (balanced) over N upstreams on the one simulator.

1. Throughput: N messages with registered_delivery=1, as fast as the ESME's
   window allows; the clock runs from the first submit_sm until the last
   receipt is back at the ESME.
2. Latency: a steady rate (1,000/s by default) for a few seconds; p50 / p99
   of submit_sm -> submit_sm_resp (which the gateway sends only after commit).

A measurement, not a test: it prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

import smpp
from smpp.aio import SmppClient


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _spawn(*args: str, ready: str, log: Path) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMSGW_")}
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "gateway.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = await process.stdout.readline()
            if not line:
                raise RuntimeError(f"{args[0]} exited: see {log}")
            if ready in line.decode():
                break
    # Keep draining stdout so the child never blocks on a full pipe.
    asyncio.get_running_loop().create_task(_drain(process.stdout))
    return process


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 20)
        except TimeoutError:
            process.kill()
            await process.wait()


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc; 0 where there is none."""
    fields = _stat(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    """The processes under `pid` (the gateway's writer process sits under a forkserver)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _tree_cpu_seconds(pid: int) -> float:
    return sum(_cpu_seconds(p) for p in _descendants(pid))


def _postgres_cpu_seconds() -> float:
    """CPU of every PostgreSQL server process on this machine (its backends are not
    the gateway's children, so `_tree_cpu_seconds` misses them)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                comm = (entry / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith("postgres"):
                total += _cpu_seconds(int(entry.name))
    return total


@asynccontextmanager
async def _database(tmp_path: Path, postgres: str | None) -> AsyncIterator[str]:
    """The gateway's database URL: a SQLite file in `tmp_path`, or a new database on the
    PostgreSQL server of `postgres`, dropped afterwards."""
    if postgres is None:
        yield f"sqlite+aiosqlite:///{tmp_path / 'bench.db'}"
        return
    server = make_url(postgres)
    if server.get_backend_name() != "postgresql":
        raise SystemExit(f"--postgres needs a postgresql+asyncpg:// URL, not {postgres!r}")
    name = f"smsgw_bench_{uuid.uuid4().hex[:12]}"
    # CREATE / DROP DATABASE cannot run in a transaction.
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.dispose()


def _submit_sm(i: int) -> smpp.SubmitSm:
    return smpp.SubmitSm(
        source_addr="ACME",
        source_addr_ton=5,
        dest_addr_ton=1,
        dest_addr_npi=1,
        destination_addr=f"3460{i % 10_000_000:07d}",
        registered_delivery=1,
        short_message=b"Your invoice 1234 is due on 12/12. Pay at https://pay.example/i/1234",
    )


@dataclass(frozen=True)
class Options:
    messages: int = 20_000
    window: int = 200
    rate: int = 1000
    seconds: float = 5.0
    sessions: int = 1
    upstreams: int = 1
    postgres: str | None = None


async def run(options: Options) -> None:
    with tempfile.TemporaryDirectory(prefix="smsgw-bench-") as tmp:
        tmp_path = Path(tmp)
        async with _database(tmp_path, options.postgres) as url:
            await _run(tmp_path, url, options)


def _upstreams(sim_port: int, options: Options) -> str:
    """``options.upstreams`` upstreams on the one simulator, each 2% dearer than the
    one before: the same delivery, so `balanced` weighs near-equal routes (and
    explores among them) on every message. Each binds with a system_id of its
    own: the simulator sends receipts to the system_id that submitted."""
    return "".join(
        f"""
[[upstreams]]
name = "{"sim" if n == 0 else f"sim{n + 1}"}"
host = "127.0.0.1"
port = {sim_port}
system_id = "gw{n + 1}"
password = "pw"
window = 200
sessions = {options.sessions}
tps = 1000000
prices = {{ "default" = {0.01 * 1.02**n:.6f} }}
"""
        for n in range(options.upstreams)
    )


async def _run(tmp_path: Path, url: str, options: Options) -> None:
    messages, window, rate, seconds = (
        options.messages,
        options.window,
        options.rate,
        options.seconds,
    )
    sim_port, http_port, smpp_port = _free_port(), _free_port(), _free_port()
    config = tmp_path / "bench.toml"
    config.write_text(
        f"""
[database]
url = "{url}"
[http]
listen = "127.0.0.1:{http_port}"
[smpp]
listen = "127.0.0.1:{smpp_port}"
[dispatch]
max_queue = 1000000
[[accounts]]
system_id = "bench"
password = "bench-pw"
tps = 1000000
"""
        + _upstreams(sim_port, options)
    )
    log = tmp_path / "bench.log"
    simulator = await _spawn(
        "simulator",
        "--listen",
        f"127.0.0.1:{sim_port}",
        "--dlr-delay-ms",
        "10",
        ready="listening",
        log=log,
    )
    gateway = await _spawn("serve", "--config", str(config), ready="serving", log=log)
    receipts = 0
    all_receipts = asyncio.Event()
    target = messages

    async def on_deliver_sm(pdu: smpp.DeliverSm) -> int:
        nonlocal receipts
        if pdu.esm_class & 0x04:
            receipts += 1
            if receipts >= target:
                all_receipts.set()
        return 0

    esme = SmppClient(
        "127.0.0.1",
        smpp_port,
        system_id="bench",
        password="bench-pw",
        bind="transceiver",
        window=window,
        on_deliver_sm=on_deliver_sm,
        response_timeout=30,
    )
    try:
        await esme.start()
        await esme.wait_bound(30)

        # 1. Throughput, submit until the receipt is back.
        cpu_before = [_cpu_seconds(p.pid) for p in (gateway, simulator)] + [
            time.process_time(),
            _tree_cpu_seconds(gateway.pid),
            _postgres_cpu_seconds(),
        ]
        start = time.perf_counter()
        refused = 0

        async def submit_range(first: int, count: int) -> None:
            nonlocal refused
            for i in range(first, first + count):
                resp = await esme.submit_sm(_submit_sm(i))
                if resp.command_status:
                    refused += 1

        # `window` submitters, each with its share of the messages (all of them are sent).
        bounds = [k * messages // window for k in range(window + 1)]
        await asyncio.gather(
            *(submit_range(bounds[k], bounds[k + 1] - bounds[k]) for k in range(window))
        )
        target = messages - refused
        if receipts >= target:
            all_receipts.set()
        submitted = time.perf_counter()
        await asyncio.wait_for(all_receipts.wait(), 120)
        done = time.perf_counter()
        print(
            f"end to end: {target} messages with receipts in {done - start:.2f} s "
            f"= {target / (done - start):,.0f} msg/s "
            f"(accepted at {target / (submitted - start):,.0f} msg/s; {refused} refused)"
        )
        cpu_after = [_cpu_seconds(p.pid) for p in (gateway, simulator)] + [
            time.process_time(),
            _tree_cpu_seconds(gateway.pid),
            _postgres_cpu_seconds(),
        ]
        used = [(a - b) * 1e6 / max(target, 1) for a, b in zip(cpu_after, cpu_before, strict=True)]
        print(
            f"CPU per message: gateway {used[0]:.0f} us + its writer process "
            f"{used[3]:.0f} us, simulator {used[1]:.0f} us, "
            f"load generator {used[2]:.0f} us"
            + (f", PostgreSQL server {used[4]:.0f} us" if url.startswith("postgresql") else "")
            + f" (on {os.cpu_count()} cores)"
        )

        # 2. submit_sm_resp latency at a steady rate.
        latencies: list[float] = []
        tasks: list[asyncio.Task[None]] = []

        async def timed(i: int) -> None:
            t0 = time.perf_counter()
            await esme.submit_sm(_submit_sm(i))
            latencies.append(time.perf_counter() - t0)

        total = int(rate * seconds)
        loop = asyncio.get_running_loop()
        t_start = loop.time()
        for i in range(total):
            delay = t_start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(loop.create_task(timed(i)))
        await asyncio.gather(*tasks)
        # Let the receipts of this run come back before unbinding, so none
        # arrives at a session that is closing.
        async with asyncio.timeout(60):
            while receipts < target + total:
                await asyncio.sleep(0.05)
        latencies.sort()
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
        print(
            f"submit_sm_resp latency at {rate}/s over {len(latencies)} submits: "
            f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {latencies[-1] * 1000:.1f} ms"
        )
    finally:
        await esme.close()
        await _stop(gateway)
        await _stop(simulator)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--messages", type=_positive, default=20_000)
    parser.add_argument("--window", type=_positive, default=200, help="ESME submits in flight")
    parser.add_argument(
        "--rate", type=_positive, default=1000, help="steady rate for the latency run"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the latency run")
    parser.add_argument(
        "--sessions", type=_positive, default=1, help="binds from the gateway to each upstream"
    )
    parser.add_argument(
        "--upstreams",
        type=_positive,
        default=1,
        help="upstreams (on the one simulator, each 2%% dearer): balanced routing among them",
    )
    parser.add_argument(
        "--postgres",
        metavar="URL",
        help="a PostgreSQL server (postgresql+asyncpg://user@host:port/db) to run on "
        "instead of SQLite; the run gets a database of its own there",
    )
    args = parser.parse_args(argv)
    options = Options(
        args.messages,
        args.window,
        args.rate,
        args.seconds,
        args.sessions,
        args.upstreams,
        args.postgres,
    )
    print(
        f"upstreams: {options.upstreams} ({options.sessions} session(s) each); database: "
        f"{'PostgreSQL' if options.postgres else 'SQLite'}"
    )
    asyncio.run(run(options))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
