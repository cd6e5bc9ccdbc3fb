"""Drive `wrk` (pinned to a core, bounded in time) and parse what it prints."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}
_SCRIPTS = Path(tempfile.mkdtemp(prefix="x402r-bench-lua-"))


class WrkMissing(RuntimeError):
    """wrk is not installed."""


def wrk_path() -> str:
    """The wrk binary, or a clear error saying how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise WrkMissing(
            "wrk (the HTTP load generator) is not installed; on Debian/Ubuntu: "
            "apt-get install -y wrk"
        )
    return path


def wrk_version() -> str:
    """`wrk -v` first line, e.g. `wrk debian/4.1.0-3+b2 [epoll]`."""
    out = subprocess.run([wrk_path(), "-v"], capture_output=True, text=True, timeout=5)
    first = (out.stdout or out.stderr).splitlines()[0]
    return first.split(" Copyright")[0]


@dataclass(frozen=True)
class WrkResult:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx_3xx: int
    socket_errors: int
    duration_s: float
    connections: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def lua_script(name: str, text: str) -> Path:
    """Write a Lua script for wrk and return its path."""
    path = _SCRIPTS / f"{name}.lua"
    path.write_text(text)
    return path


def lua_post(body: str, headers: dict[str, str] | None = None) -> Path:
    """POST `body` as JSON on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_str(body)}"]
    lines.append('wrk.headers["Content-Type"] = "application/json"')
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{_lua_str(name)}] = {_lua_str(value)}")
    return lua_script(f"post_{abs(hash(body + str(headers)))}", "\n".join(lines) + "\n")


def lua_paths(name: str, paths: list[str], headers: dict[str, str] | None = None) -> Path:
    """GET each of `paths` in turn (each connection starts at a different offset)."""
    items = ",".join(_lua_str(p) for p in paths)
    extra = "".join(
        f"wrk.headers[{_lua_str(k)}] = {_lua_str(v)}\n" for k, v in (headers or {}).items()
    )
    text = (
        f"local paths = {{{items}}}\nlocal n = #paths\nlocal i = math.random(n)\n{extra}"
        "request = function()\n  i = i % n + 1\n  return wrk.format(nil, paths[i])\nend\n"
    )
    return lua_script(name, text)


def lua_paced(name: str, delay_ms: int) -> Path:
    """Each connection waits `delay_ms` between requests (a client polling at a fixed rate)."""
    return lua_script(name, f"function delay()\n  return {delay_ms}\nend\n")


def _lua_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def run_wrk(
    url: str,
    *,
    duration_s: float,
    connections: int,
    threads: int = 1,
    script: Path | None = None,
    core: int | None = None,
    timeout_ms: int = 2000,
) -> WrkResult:
    """Run wrk against `url` (a 127.0.0.1 address) for `duration_s` and parse its report."""
    assert url.startswith("http://127.0.0.1:"), "benchmarks only target this machine"
    seconds = max(1, round(duration_s))
    cmd = [
        wrk_path(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        f"{max(1, timeout_ms // 1000)}s",
        "--latency",
    ]
    if script is not None:
        cmd += ["-s", str(script)]
    cmd.append(url)
    if core is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(core), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    return parse(out.stdout, seconds, connections)


def parse(text: str, duration_s: float, connections: int) -> WrkResult:
    """Parse wrk's `--latency` report."""
    pct = dict(re.findall(r"^\s+(50|99)%\s+([\d.]+\w+)\s*$", text, re.M))
    requests = re.search(r"(\d+) requests in", text)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if not (requests and rps and "50" in pct and "99" in pct):
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    return WrkResult(
        rps=float(rps.group(1)),
        p50_ms=_ms(pct["50"]),
        p99_ms=_ms(pct["99"]),
        requests=int(requests.group(1)),
        non_2xx_3xx=int(non2xx.group(1)) if non2xx else 0,
        socket_errors=sum(int(g) for g in sock.groups()) if sock else 0,
        duration_s=duration_s,
        connections=connections,
    )


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(\w+)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]
