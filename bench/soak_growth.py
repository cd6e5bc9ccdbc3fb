"""What grows in the gateway over a soak: its allocations and objects, compared in time.

`python -m bench.soak_growth --minutes 7 --cache-mib 1`: the soak (bench/soak.py) against a
gateway run by bench.traced_gateway, with snapshots half way into the traffic and just
before its end; prints the allocation sites (tracemalloc, by traceback) and the object types
(gc) that grew most between the two. Tracing slows the gateway a lot: fewer jobs are made,
and its RSS is no measure (each snapshot itself takes tens of MiB).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path

from bench import soak
from bench.stage import Stage

PROBE_S = 10
TOP = 15


def _signal_later(stage: Stage, first_pid: int, offsets: list[float]) -> None:
    """SIGUSR1 to the restarted gateway `offsets` seconds after its start."""
    while stage.w.gateways[0].proc is None or stage.gateway_pid(0) == first_pid:
        time.sleep(0.2)
    pid, started = stage.gateway_pid(0), time.monotonic()
    for offset in offsets:
        time.sleep(max(0.0, started + offset - time.monotonic()))
        os.kill(pid, signal.SIGUSR1)
        print(f"[growth] snapshot asked at {offset:.0f} s", flush=True)


def compare(out: Path) -> None:
    """The biggest growths between snapshot 0 and 1."""
    first = tracemalloc.Snapshot.load(str(out / "0.snap"))
    second = tracemalloc.Snapshot.load(str(out / "1.snap"))
    print(
        f"[growth] traced: {sum(s.size for s in first.statistics('filename')):,} → "
        f"{sum(s.size for s in second.statistics('filename')):,} bytes"
    )
    for stat in second.compare_to(first, "traceback")[:TOP]:
        print(f"\n{stat.size_diff:+,} B {stat.count_diff:+,} blocks")
        for line in stat.traceback.format()[-8:]:
            print("   ", line)
    before = json.loads((out / "0.json").read_text())
    after = json.loads((out / "1.json").read_text())
    grown = sorted(after, key=lambda k: after[k] - before.get(k, 0), reverse=True)[:TOP]
    print(
        "\n[growth] objects by type: "
        + ", ".join(f"{k} {before.get(k, 0):,}→{after[k]:,}" for k in grown)
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak_growth", description=__doc__)
    parser.add_argument("--minutes", type=float, default=6)
    parser.add_argument("--cache-mib", type=int, default=1)
    options = parser.parse_args(argv)
    out = Path(tempfile.mkdtemp(prefix="x402r-growth-"))
    os.environ["BENCH_SNAPSHOT_DIR"] = str(out)
    stage = Stage(log_dir=Path(tempfile.mkdtemp(prefix="x402r-bench-logs-")))
    try:
        stage.start()
        stage.w.gateway_command = ["-m", "bench.traced_gateway"]
        traffic = options.minutes * 60
        offsets = [PROBE_S + 5 + traffic / 2, PROBE_S + 5 + traffic - 10]
        threading.Thread(
            target=_signal_later, args=(stage, stage.gateway_pid(0), offsets), daemon=True
        ).start()
        result = soak.run(stage, options.minutes, PROBE_S, 5, options.cache_mib)
    finally:
        stage.stop()
    samples = result["samples"]
    print(
        f"[growth] jobs {result['jobs']}, errors {result['errors']}; RSS "
        + " ".join(
            f"{s['t_s']:.0f}s:{s['rss_mib']:.1f}" for s in samples[:: max(1, len(samples) // 12)]
        )
    )
    time.sleep(1)
    compare(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
