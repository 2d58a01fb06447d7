"""The group committer's transactions in a process of their own.

On a writer thread, the transactions share the GIL with the event loop. Under
load the loop holds it most of the time, and the thread waits for it between
every two statements: on SQLite a batch that needs 8 ms of CPU took about
30 ms, the writer was busy 95% of the time, and the whole pipeline (accepts
wait for their commit, receipts for theirs) slowed to its pace. In a process
of its own the writer has a GIL of its own; the loop's cost is one pickle of
the batch and one of the results.

The two ends speak over a socket pair, one frame each way per transaction: a
4-byte big-endian length and a pickle. To the child: the list of operations of
one transaction. Back: ``(True, results)``, ``(True, OneByOne)`` (the batch failed
and the child ran each operation in a transaction of its own, as the committer
does on a thread) or ``(False, exception)``. The
child's first frame says whether it could open the database. When the parent
closes its end (``close()``, or the parent died, even by SIGKILL), the child
finishes the transaction in hand, closes its connection and exits.

SQLite runs the operations over the stdlib driver, straight through; PostgreSQL
over asyncpg on an event loop of the child's own. Children come from a
forkserver that has imported this module (and with it the store's operations):
one fork of a small process, not a new interpreter per store. As with any
use of multiprocessing, a program run as a script must start its work under
``if __name__ == "__main__":`` (``smsgw`` and ``python -m`` modules do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import pickle
import signal
import socket
import struct
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar

from gateway.logs import configure_logging, current_logging
from gateway.store.committer import OneByOne, Transactions, WriteOp, WriterLost
from gateway.store.engine import create_engine, create_sync_sqlite_engine, is_sqlite

__all__ = ["WriterProcess"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_FRAME = struct.Struct(">I")
_START_TIMEOUT_S = 60.0  # the first start also starts the forkserver
_STOP_TIMEOUT_S = 30.0


class WriterProcess:
    """The parent's end: ``send(ops)`` a transaction, answered in the order sent."""

    def __init__(
        self, process: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        # The answers still to come, in the order the transactions were sent:
        # the child runs them one after the other.
        self._answers: deque[asyncio.Future[Any]] = deque()
        self._reading: asyncio.Task[None] | None = None
        self._lost = False

    @property
    def pid(self) -> int:
        return int(self._process.pid)

    @property
    def lost(self) -> bool:
        """True once the child has ended (or was told to): a new one must take over."""
        return self._lost

    @classmethod
    async def start(
        cls, url: str, engine_options: Mapping[str, Any] | None = None
    ) -> WriterProcess:
        """A writer on the database at ``url``; raises what connecting to it raised.

        ``engine_options`` go to `create_engine` (PostgreSQL; SQLite needs none)."""
        context: Any
        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
        else:  # not on this platform: an interpreter of its own per writer
            context = multiprocessing.get_context("spawn")
        parent, child = socket.socketpair()
        try:
            process = context.Process(
                target=_child_main,
                args=(child, url, dict(engine_options or {}), current_logging()),
                name="smsgw-writer",
                daemon=True,
            )
            # The first start runs the forkserver: an interpreter and its imports.
            await asyncio.to_thread(process.start)
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()  # the child has its own copy; EOF must reach us when it ends
        reader, writer = await asyncio.open_unix_connection(sock=parent)
        self = cls(process, reader, writer)
        try:
            async with asyncio.timeout(_START_TIMEOUT_S):
                ok, value = await self._read_answer()
            if not ok:
                raise value
        except BaseException:
            await self._stop()
            raise
        self._reading = asyncio.get_running_loop().create_task(
            self._read_answers(), name="smsgw-writer-answers"
        )
        return self

    def send(self, ops: list[WriteOp[Any]]) -> asyncio.Future[list[Any] | OneByOne]:
        """Send ``ops`` as one transaction; the Future is done with its results (or
        what it raised) once the child has committed it (or rolled it back). When
        it failed and ``ops`` were several, the child ran each in a transaction of
        its own: the result is then a `OneByOne`."""
        if self._lost:
            raise WriterLost("the writer process has ended")
        payload = pickle.dumps(ops, pickle.HIGHEST_PROTOCOL)
        answer: asyncio.Future[list[Any] | OneByOne] = asyncio.get_running_loop().create_future()
        self._answers.append(answer)
        self._writer.write(_FRAME.pack(len(payload)) + payload)
        return answer

    async def _read_answer(self) -> tuple[bool, Any]:
        header = await self._reader.readexactly(_FRAME.size)
        answer: tuple[bool, Any] = pickle.loads(
            await self._reader.readexactly(_FRAME.unpack(header)[0])
        )
        return answer

    async def _read_answers(self) -> None:
        try:
            while True:
                ok, value = await self._read_answer()
                answer = self._answers.popleft()
                if answer.done():
                    continue
                if ok:
                    answer.set_result(value)
                else:
                    answer.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._lost = True
            if self._answers:
                code = self._process.exitcode
                log.error("the writer process ended (exit code %s)", code)
                while self._answers:
                    answer = self._answers.popleft()
                    if not answer.done():
                        answer.set_exception(
                            WriterLost(f"the writer process ended (exit code {code})")
                        )

    async def close(self) -> None:
        """Let the child finish what it was sent and exit."""
        await self._stop()

    async def _stop(self) -> None:
        self._lost = True
        if self._reading is not None:
            # EOF to the child, which answers what it has in hand and exits; the
            # answers still come in until it has.
            with contextlib.suppress(OSError):
                self._writer.write_eof()
            await asyncio.wait({self._reading}, timeout=_STOP_TIMEOUT_S)
        process = self._process
        await asyncio.to_thread(process.join, _STOP_TIMEOUT_S)
        if process.exitcode is None:
            log.error("the writer process did not exit; killing it")
            process.kill()
            await asyncio.to_thread(process.join)
        if self._reading is not None:
            await asyncio.gather(self._reading, return_exceptions=True)
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


# --- the child -----------------------------------------------------------------------


def _child_main(
    sock: socket.socket,
    url: str,
    engine_options: dict[str, Any],
    logging_as: tuple[str, bool] | None = None,
) -> None:
    # Ctrl-C reaches the whole process group: the parent's shutdown decides when
    # the writer stops (it commits what is queued first), not the signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if logging_as is not None:
        # Its stderr is the gateway's (inherited through the forkserver): the same
        # lines, in the same format, masked the same way.
        level, json = logging_as
        configure_logging(level, json=json)
    loop: asyncio.AbstractEventLoop | None = None
    with sock:
        try:
            run: Callable[[Coroutine[Any, Any, Any]], Any]
            if is_sqlite(url):
                transactions = Transactions(None, create_sync_sqlite_engine(url))
                run = _drive
            else:
                loop = asyncio.new_event_loop()
                transactions = Transactions(create_engine(url, **engine_options))
                run = loop.run_until_complete
            run(transactions.connection())
        except Exception as exc:
            _send(sock, (False, _portable(exc)))
            return
        _send(sock, (True, None))
        try:
            while (ops := _receive(sock)) is not None:
                _send(sock, _transaction(run, transactions, ops))
        finally:
            run(transactions.close())
            if loop is not None:
                loop.close()


def _transaction(
    run: Callable[[Coroutine[Any, Any, Any]], Any], transactions: Transactions, ops: list[Any]
) -> tuple[bool, Any]:
    """One batch's answer, with every exception in it made portable."""
    try:
        results = run(transactions.commit(ops))
    except Exception as exc:
        return False, _portable(exc)
    if isinstance(results, OneByOne):
        results = OneByOne(
            results.error,
            [(ok, value if ok else _portable(value)) for ok, value in results.outcomes],
        )
    return True, results


def _drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (the operations over a synchronous connection)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    coro.close()
    raise RuntimeError("a write operation suspended in the writer process")


def _receive(sock: socket.socket) -> Any:
    header = _read_exactly(sock, _FRAME.size)
    if header is None:
        return None
    body = _read_exactly(sock, _FRAME.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(sock: socket.socket, n: int) -> bytes | None:
    """``n`` bytes, or None at EOF (the parent closed its end or died)."""
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(min(n - len(chunks), 1 << 20))
        if not chunk:
            return None
        chunks += chunk
    return bytes(chunks)


def _send(sock: socket.socket, answer: tuple[bool, Any]) -> None:
    try:
        payload = pickle.dumps(answer, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # a result or an error that does not pickle
        payload = pickle.dumps((False, _portable(exc)), pickle.HIGHEST_PROTOCOL)
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        sock.sendall(_FRAME.pack(len(payload)) + payload)


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives a pickle round trip, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(exc, pickle.HIGHEST_PROTOCOL))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
