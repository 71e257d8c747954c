"""What a live request costs the worker, next to the plain app: the profile's numbers.

    python -m benchmarks.costs

For M2 (per 64 KiB chunk), M3 (per short request, wrk -c16) and M4 (per SSE
request, 64 at once) it reads the gunicorn worker's CPU time and its
threads' context switches from /proc before and after the load, and prints
them per unit of work. A thread switch is what the live design adds (the
app runs on another thread); this shows how many, and what they cost.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable

from . import client
from .apps import APPS
from .server import context_switches, cpu_seconds, gunicorn, worker_pid


def measure(name: str, load: Callable[[int], int]) -> tuple[float, float]:
    """(CPU µs, context switches) per unit of ``load(port)``, which returns its units."""
    with gunicorn(APPS[name], "--worker-class", "gthread", "--threads", "64") as (proc, port):
        pid = worker_pid(proc.pid)
        load(port)  # warm up
        cpu, switches = cpu_seconds(pid), context_switches(pid)
        units = load(port)
        cpu, switches = cpu_seconds(pid) - cpu, context_switches(pid) - switches
    return cpu / units * 1e6, switches / units


def chunks(port: int) -> int:
    for _ in range(3):
        client.download(port, "/chunks/65536/8192")
    return 3 * 8192


def short(port: int) -> int:
    out = subprocess.run(["wrk", "-t1", "-c16", "-d3s", f"http://127.0.0.1:{port}/short"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    match = re.search(r"(\d+) requests in", out)
    assert match is not None, out
    return int(match.group(1))


def first_bytes(port: int) -> int:
    for _ in range(10):
        client.ttfb_round(port, "/sse", 64)
    return 640


def main() -> None:
    print(f"{'load':<32} {'app':>6} {'CPU µs/unit':>12} {'switches/unit':>14}")
    for label, load in (("M2 per 64 KiB chunk", chunks), ("M3 per short request", short),
                        ("M4 per SSE request (64 at once)", first_bytes)):
        for name in ("plain", "live"):
            cpu, switches = measure(name, load)
            print(f"{label:<32} {name:>6} {cpu:>12,.0f} {switches:>14.2f}")


if __name__ == "__main__":
    main()
