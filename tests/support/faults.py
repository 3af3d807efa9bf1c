"""A TCP proxy a fault test puts between the service and a server it depends on (the S3 server), then turns
off (connections refused, open ones cut) or hangs (connections accepted, nothing answered) and back on.

It runs its own event loop on a thread of the test process; the service reaches it over real TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tests.support.ports import free_port

CHUNK = 64 * 1024


class FaultyProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target_port`` until told otherwise."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._answering = asyncio.Event()  # cleared while hung: nothing is forwarded either way
        self._connections: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faulty-proxy", daemon=True)
        self._thread.start()
        self._call(self._listen())
        self._loop.call_soon_threadsafe(self._answering.set)

    # -- what a test calls -------------------------------------------------------------------------

    def down(self) -> None:
        """Refuse new connections and cut the open ones, as a stopped server does."""
        self._call(self._stop_listening())

    def hang(self) -> None:
        """Accept connections and read requests, but answer nothing, as a wedged server does."""
        self._loop.call_soon_threadsafe(self._answering.clear)

    def restore(self) -> None:
        """Forward again (listening again after `down`)."""
        if self._server is None:
            self._call(self._listen())
        self._loop.call_soon_threadsafe(self._answering.set)

    def close(self) -> None:
        self._call(self._stop_listening())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)

    # -- the proxy -----------------------------------------------------------------------------------

    def _call(self, coroutine) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, reuse_address=True)

    async def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._connections):
            writer.transport.abort()
        self._connections.clear()

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self._connections.add(client_writer)
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._connections.add(upstream_writer)
        await asyncio.gather(
            self._pipe(client_reader, upstream_writer), self._pipe(upstream_reader, client_writer)
        )

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(CHUNK):
                await self._answering.wait()  # held here while hung
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()


@contextmanager
def faulty_proxy(target_port: int) -> Iterator[FaultyProxy]:
    proxy = FaultyProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
