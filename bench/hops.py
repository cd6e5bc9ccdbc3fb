"""A timing HTTP/1.1 relay put between the gateway and each service it calls.

Each relay forwards bytes unchanged and records when a request's first byte arrived and when
its response was written back, so the time a paid request spends in the facilitator (and the
chain behind it) and in the upstream can be subtracted from its total. It runs in a thread
of the benchmark process, on 127.0.0.1 only, and understands exactly what the services
speak: Content-Length or chunked bodies on keep-alive connections.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from sandbox.chain import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass(frozen=True)
class Hop:
    """One relayed request."""

    service: str
    request_line: str
    start: float
    end: float
    status: int
    detail: bytes = b""  # the start of a non-2xx answer

    @property
    def ms(self) -> float:
        """Duration in milliseconds."""
        return (self.end - self.start) * 1000


async def _read_message(
    reader: asyncio.StreamReader, *, is_response: bool, first: bytes = b""
) -> tuple[bytes, str]:
    """One HTTP message (head + body) as raw bytes, and its first line; `first`: bytes of it
    already read."""
    head = first + await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            body += size_line + chunk
            if size == 0:
                break
        return head + body, lines[0]
    length = int(headers.get("content-length", "0") or 0)
    status = lines[0].split(" ")[1] if is_response else ""
    if is_response and (status.startswith("1") or status in ("204", "304")):
        length = 0
    return head + (await reader.readexactly(length) if length else b""), lines[0]


@dataclass
class HopRelays:
    """Relays `name → target port`, each on its own local port; `hops` collects timings."""

    targets: dict[str, int]
    ports: dict[str, int] = field(default_factory=dict)
    hops: list[Hop] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _servers: list[asyncio.Server] = field(default_factory=list)
    _thread: threading.Thread | None = None

    def start(self) -> HopRelays:
        """Bind every relay, then return."""
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            for name, target in self.targets.items():
                port = self.ports[name] = free_port()
                handler = self._handler(name, target)
                self._servers.append(await asyncio.start_server(handler, "127.0.0.1", port))
            ready.set()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="hop-relays", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("hop relays did not start")
        return self

    def url(self, name: str) -> str:
        """Base URL of the relay for `name`."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def between(self, start: float, end: float) -> list[Hop]:
        """Hops that began within [start, end] (perf_counter seconds)."""
        return [h for h in list(self.hops) if start <= h.start <= end]

    def stop(self) -> None:
        """Close the relays and their connections, then the loop."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        loop.close()

    async def _shutdown(self) -> None:
        for server in self._servers:
            server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _handler(self, name: str, target: int) -> Handler:
        async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", target)
            try:
                while True:
                    # The hop starts when the request's first byte arrives: the relay's own
                    # reading and parsing must not count as the gateway's time.
                    first = await client_r.read(1)
                    if not first:
                        return
                    start = time.perf_counter()
                    try:
                        request, line = await _read_message(
                            client_r, is_response=False, first=first
                        )
                    except (asyncio.IncompleteReadError, ConnectionError):
                        return
                    up_w.write(request)
                    response, status_line = await _read_message(up_r, is_response=True)
                    client_w.write(response)
                    await client_w.drain()
                    status = int(status_line.split(" ")[1])
                    detail = response[-600:] if status >= 300 else b""
                    self.hops.append(Hop(name, line, start, time.perf_counter(), status, detail))
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            finally:
                up_w.close()
                client_w.close()

        return handle
