"""One client process holding many long polls open: `python -m bench.waiting_client SPEC`.

SPEC is a JSON file: `{"base": url, "paths": [...], "connections": n, "out": file}`.
Connection i sends `GET paths[i % len(paths)]` (HTTP/1.1, raw asyncio streams: a few
hundred bytes of client state per connection) and waits for the answer; a job still
processing when the wait ends is asked again on the same connection, as a client does.
Once every request is written the process prints `ready`, and at the end writes each
connection's path, last status, job state, arrival time (epoch s) and polls to `out`.
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONNECTS_AT_ONCE = 64
ANSWER_TIMEOUT_S = 150.0  # every wait of one connection


def raise_fd_limit(wanted: int) -> None:
    """Raise this process's open-file limit towards `wanted` (up to the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _one(
    host: str, port: int, path: str, gate: asyncio.Semaphore, sent: list[int], total: int
) -> dict[str, Any]:
    answer: dict[str, Any] = {"path": path}
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    counted = False
    try:
        async with gate:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            await writer.drain()
        counted = _count(sent, total)
        answer["polls"] = 0
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            # As a client does: a job still processing when the wait ends is asked again.
            while (
                answer.get("state", "processing") == "processing"
                and answer.get("status", 200) == 200
            ):
                if answer["polls"]:
                    writer.write(request)
                answer["polls"] += 1
                await _read_answer(reader, answer)
        writer.close()
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError, StopIteration) as exc:
        answer["error"] = f"{type(exc).__name__}: {exc}"[:200]
        if not counted:  # failed before sending: still counts towards `ready`
            _count(sent, total)
    return answer


async def _read_answer(reader: asyncio.StreamReader, answer: dict[str, Any]) -> None:
    head = await reader.readuntil(b"\r\n\r\n")
    answer["at"] = time.time()
    lines = head.decode("latin-1").split("\r\n")
    answer["status"] = int(lines[0].split(" ")[1])
    length = next(
        int(v)
        for k, _, v in (ln.partition(":") for ln in lines[1:])
        if k.lower() == "content-length"
    )
    answer["state"] = json.loads(await reader.readexactly(length)).get("status")


def _count(sent: list[int], total: int) -> bool:
    sent[0] += 1
    if sent[0] == total:
        print("ready", flush=True)
    return True


async def run(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Open every connection, send every request, collect every answer."""
    url = urlsplit(spec["base"])
    host, port = url.hostname or "127.0.0.1", url.port or 80
    paths: list[str] = spec["paths"]
    total: int = spec["connections"]
    gate = asyncio.Semaphore(CONNECTS_AT_ONCE)
    sent = [0]
    return await asyncio.gather(
        *(_one(host, port, paths[i % len(paths)], gate, sent, total) for i in range(total))
    )


def main() -> None:
    """CLI: run the spec, write the answers."""
    spec = json.loads(Path(sys.argv[1]).read_text())
    raise_fd_limit(spec["connections"] + 256)
    import uvloop

    answers = uvloop.run(run(spec))
    Path(spec["out"]).write_text(json.dumps(answers))


if __name__ == "__main__":
    main()
