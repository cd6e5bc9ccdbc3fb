"""Where a process's CPU really goes, by binary: `perf record` on its pid, summed per library.

py-spy's `--gil` samples count a thread that holds the GIL whether or not it is on a CPU: a
gateway that wakes Postgres or the upstream on its own core with a loopback `send()` may be
preempted inside that call, and every such sample looks like "CPU in a socket write". `perf`
samples only what runs, so its split between the interpreter, the kernel and the compiled
extensions is the one `/proc`'s CPU time is made of.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S.*?)\s*$")


def perf_record(pid: int, out: Path, seconds: int) -> subprocess.Popen[bytes] | None:
    """`perf record` of `pid` for `seconds` into `out`, when asked for and perf is there."""
    if seconds <= 0:
        return None
    if shutil.which("perf") is None:
        print("[bench] perf is not installed: no on-CPU breakdown", flush=True)
        return None
    print(f"[bench] perf record of {pid} into {out}", flush=True)
    command = ["perf", "record", "-F", "999", "-p", str(pid), "-o", str(out)]
    return subprocess.Popen(
        [*command, "--", "sleep", str(seconds)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def by_binary(data: Path, top: int = 12) -> list[tuple[str, float]]:
    """(binary, share of the samples in %) from a `perf record` file, largest first."""
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "--sort", "dso", "--stdio"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    shares: list[tuple[str, float]] = []
    for line in report.splitlines():
        match = _LINE.match(line)
        if match and not line.lstrip().startswith("#"):
            shares.append((match.group(2), float(match.group(1))))
    return shares[:top]
