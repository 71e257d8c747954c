"""``make bench``: live_wsgi against the server's own limit, in one run.

Starts each app of ``benchmarks.apps`` under its own gunicorn (gthread, one
worker) on loopback, drives it from this client process (and ``wrk``), and
prints one table: absolute figures and ratios to the plain generator app
measured in the same run (medians of several repetitions, interleaved so
drift hits every app alike), then the targets, met or missed.

The client's own ceiling is measured against ``benchmarks.rawserver``, a
trivial raw-socket server: when it is far above every app, the client is not
what limits them.

Then the broadcast figures (B1-B3, ``benchmarks.broadcast``), in a table of
their own: each against what it is compared with in the same run.

    python -m benchmarks [--quick] [--reps N] [--only M1,M4,B2] [--json FILE]
                         [--broker URL]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from . import broadcast, client
from .apps import APPS
from .held_streams import Held, held_streams
from .server import gunicorn, proc_status, rawserver, worker_pid

#: Columns of the table: the apps, the limit first.
NAMES = list(APPS)
#: Server threads for M1-M4 and M6: enough for M4's 64 concurrent requests.
THREADS = "64"
KIB = 1024


@dataclass(frozen=True)
class Settings:
    reps: int
    m1_count: int
    m2_count: int
    m3_seconds: float
    m3_reps: int
    m4_rounds: int
    m4_reps: int
    m5_streams: int
    m5_events: int
    m6_seconds: float


FULL = Settings(reps=5, m1_count=200_000, m2_count=8192, m3_seconds=5, m3_reps=3,
                m4_rounds=20, m4_reps=3, m5_streams=1000, m5_events=30, m6_seconds=5)
QUICK = Settings(reps=3, m1_count=50_000, m2_count=4096, m3_seconds=2, m3_reps=1,
                 m4_rounds=5, m4_reps=1, m5_streams=200, m5_events=5, m6_seconds=2)
M4_CONCURRENCY = 64
M6_READ = 64 * KIB
M6_INTERVAL = 0.010
#: The live apps' queue bound (LiveMiddleware's default queue_size) times
#: the largest chunk it holds (64 KiB writes; smaller ones merge up to 64 KiB).
M6_BOUND = 10 * 64 * KIB


@dataclass
class Row:
    """One metric: a value per app, and the client's ceiling where it applies."""

    key: str
    label: str
    unit: str
    higher_is_better: bool
    values: dict[str, float] = field(default_factory=dict)
    ceiling: float | None = None

    def ratio(self, name: str, base: str = "plain") -> float | None:
        value, reference = self.values.get(name), self.values.get(base)
        if value is None or not reference:
            return None
        return value / reference


@dataclass(frozen=True)
class Target:
    """``live``'s ratio to plain (or, with ``absolute``, its own value) against a limit."""

    key: str
    label: str
    limit: float
    at_most: bool = False  # the value must stay at or below the limit
    absolute: bool = False
    unit: str = "x"

    def value(self, row: Row) -> float:
        missing = float("inf") if self.at_most else 0.0
        value = row.values.get("live") if self.absolute else row.ratio("live")
        return missing if value is None else value

    def verdict(self, value: float) -> str:
        shortfall = (value - self.limit if self.at_most else self.limit - value) / self.limit
        return "met" if shortfall <= 0 else f"MISSED by {shortfall:.1%}"


TARGETS = [
    Target("m1_64", "M1 64 B chunks/s", 1.0),
    Target("m1_1k", "M1 1 KiB chunks/s", 1.0),
    Target("m2", "M2 64 KiB MB/s", 0.9),
    Target("m3_live", "M3 live route req/s", 0.85),
    Target("m3_direct", "M3 non-live route req/s", 0.98),
    Target("m4_p99", "M4 TTFB p99", 1.2, at_most=True),
    Target("m5_delivered", "M5 all events delivered (1=yes)", 1.0, absolute=True, unit=""),
    Target("m5_rss", "M5 RSS per stream (gthread)", 40, at_most=True, absolute=True,
           unit=" KB"),
    Target("m6_growth", "M6 RSS growth, slow reader", M6_BOUND / 1000, at_most=True,
           absolute=True, unit=" KB"),
]


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


# -- M1, M2: one long body ---------------------------------------------------------


def throughput(ports: dict[str, int], ceiling_port: int, settings: Settings,
               wanted: set[str]) -> list[Row]:
    cases = []
    if "M1" in wanted:
        cases += [("m1_64", "M1 64 B", 64, settings.m1_count),
                  ("m1_1k", "M1 1 KiB", KIB, settings.m1_count)]
    if "M2" in wanted:
        cases += [("m2", "M2 64 KiB", 64 * KIB, settings.m2_count)]
    rows = []
    for key, label, size, count in cases:
        path = f"/chunks/{size}/{count}"
        log(f"{label}: {count:,} chunks x {settings.reps} reps")
        times: dict[str, list[float]] = {name: [] for name in [*NAMES, "ceiling"]}
        for _ in range(settings.reps):
            times["ceiling"].append(client.download(ceiling_port, path)[0])
            for name in NAMES:
                times[name].append(client.download(ports[name], path)[0])
        medians = {name: statistics.median(t) for name, t in times.items()}
        mb = size * count / 1e6
        if key.startswith("m1"):
            row = Row(key, f"{label} chunks/s", "chunks/s", True)
            row.values = {name: count / medians[name] for name in NAMES}
            row.ceiling = count / medians["ceiling"]
            rows.append(row)
        row = Row(key + "_mb" if key.startswith("m1") else key, f"{label} MB/s", "MB/s", True)
        row.values = {name: mb / medians[name] for name in NAMES}
        row.ceiling = mb / medians["ceiling"]
        rows.append(row)
    return rows


# -- M3: short responses, keep-alive ----------------------------------------------


def short_responses(ports: dict[str, int], ceiling_port: int, settings: Settings) -> list[Row]:
    log(f"M3: wrk, 16 connections, {settings.m3_seconds:g} s per route x {settings.m3_reps} reps")
    runs: dict[tuple[str, str], list[float]] = {}
    ceiling = []
    for _ in range(settings.m3_reps):
        ceiling.append(client.wrk(ceiling_port, "/short", 16, settings.m3_seconds))
        for name in NAMES:
            # The limit apps have no middleware: both rows compare to /short.
            paths = ["/short", "/short-direct"] if "live" in name else ["/short"]
            for path in paths:
                rps = client.wrk(ports[name], path, 16, settings.m3_seconds)
                runs.setdefault((name, path), []).append(rps)
    live_row = Row("m3_live", "M3 live route req/s", "req/s", True,
                   ceiling=statistics.median(ceiling))
    direct_row = Row("m3_direct", "M3 non-live route req/s", "req/s", True,
                     ceiling=live_row.ceiling)
    for name in NAMES:
        live_row.values[name] = statistics.median(runs[(name, "/short")])
        direct_path = "/short-direct" if "live" in name else "/short"
        direct_row.values[name] = statistics.median(runs[(name, direct_path)])
    return [live_row, direct_row]


# -- M4: time to first byte ---------------------------------------------------------


def first_byte(ports: dict[str, int], ceiling_port: int, settings: Settings) -> list[Row]:
    log(f"M4: {M4_CONCURRENCY} concurrent SSE requests x {settings.m4_rounds} rounds "
        f"x {settings.m4_reps} reps")
    targets = {**ports, "ceiling": ceiling_port}
    for port in targets.values():  # warm up: threads and pools exist before we time
        client.ttfb_round(port, "/sse", M4_CONCURRENCY)
    # A p99 of 1,280 samples hangs on a few stalls of the machine: take each
    # percentile per repetition, then the median over the repetitions.
    points: dict[tuple[str, int], list[float]] = {}
    for _ in range(settings.m4_reps):
        samples: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(settings.m4_rounds):
            for name, port in targets.items():
                samples[name] += client.ttfb_round(port, "/sse", M4_CONCURRENCY)
        for name, values in samples.items():
            cuts = statistics.quantiles(values, n=100)
            for index in (49, 98):
                points.setdefault((name, index), []).append(cuts[index] * 1000)
    rows = []
    for key, label, index in (("m4_p50", "M4 TTFB p50 ms", 49), ("m4_p99", "M4 TTFB p99 ms", 98)):
        row = Row(key, label, "ms", False)
        row.values = {name: statistics.median(points[(name, index)]) for name in ports}
        row.ceiling = statistics.median(points[("ceiling", index)])
        rows.append(row)
    return rows


# -- M5: held streams -----------------------------------------------------------------


def held(settings: Settings, results: dict[str, Held]) -> list[Row]:
    delivered = Row("m5_delivered", "M5 all delivered (1=yes)", "", True)
    rss = Row("m5_rss", "M5 RSS/stream KB", "KB", False)
    threads = Row("m5_threads", "M5 threads/stream", "", False)
    for name in NAMES:
        log(f"M5 {name}: {settings.m5_streams} streams x {settings.m5_events} events, 1/s")
        result = results[name] = held_streams(name, settings.m5_streams, settings.m5_events)
        delivered.values[name] = 1.0 if result.all_delivered else 0.0
        rss.values[name] = result.rss_per_stream / 1000
        threads.values[name] = result.threads_per_stream
    return [delivered, rss, threads]


# -- M6: a slow reader ----------------------------------------------------------------


def slow_reader(settings: Settings) -> list[Row]:
    growth = Row("m6_growth", "M6 RSS growth KB", "KB", False)
    path = "/chunks/65536/100000000?fresh=1"
    for name in NAMES:
        log(f"M6 {name}: reading 64 KiB every 10 ms for {settings.m6_seconds:g} s")
        with gunicorn(APPS[name], "--worker-class", "gthread", "--threads", THREADS) as (
            proc, port
        ):
            pid = worker_pid(proc.pid)
            # Warm up once, so the pool thread and the allocator's arenas exist.
            client.slow_read(port, path, M6_READ, M6_INTERVAL, 1.0, lambda: None)
            time.sleep(0.5)  # let the server notice the hang-up before the baseline
            before = proc_status(pid)["VmRSS"]
            peak = [before]

            def sample(pid: int = pid, peak: list[int] = peak) -> None:
                peak.append(proc_status(pid)["VmRSS"])

            client.slow_read(port, path, M6_READ, M6_INTERVAL, settings.m6_seconds, sample)
        growth.values[name] = (max(peak) - before) * KIB / 1000
    return [growth]


# -- the table --------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[Row]) -> Iterator[str]:
    width = 27
    head = f"{'metric':<{width}} {'client ceiling':>14} |"
    for name in NAMES:
        head += f" {name:>10} {'':>6} |" if name != "plain" else f" {name:>10} |"
    yield head
    yield "-" * len(head)
    for row in rows:
        line = f"{row.label:<{width}} {fmt(row.ceiling):>14} |"
        for name in NAMES:
            line += f" {fmt(row.values.get(name)):>10}"
            if name != "plain":
                ratio = row.ratio(name)
                line += f" {'' if ratio is None else f'{ratio:.2f}x':>6}"
            line += " |"
        yield line


def verdicts(rows: list[Row]) -> Iterator[str]:
    by_key = {row.key: row for row in rows}
    for target in TARGETS:
        row = by_key.get(target.key)
        if row is None:
            continue
        value = target.value(row)
        shown = f"{value:,.2f}{target.unit}"
        wanted = f"{'<=' if target.at_most else '>='} {target.limit:,.2f}{target.unit}"
        yield (f"  {target.label:<34} live {shown:>10}  target {wanted:<12} "
               f"{target.verdict(value)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads, under 2 minutes")
    parser.add_argument("--reps", type=int, default=None, help="repetitions for M1/M2 (median)")
    parser.add_argument("--only", default="M1,M2,M3,M4,M5,M6,B1,B2,B3",
                        help="metrics to run, e.g. M1,M4,B2")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--broker", default="memory://",
                        help="broker URL for B1-B3 (default memory://; e.g. redis://...)")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.reps:
        settings = Settings(**{**asdict(settings), "reps": args.reps})
    wanted = {part.strip().upper() for part in args.only.split(",")}
    unknown = wanted - {"M1", "M2", "M3", "M4", "M5", "M6", "B1", "B2", "B3"}
    if unknown:
        parser.error(f"unknown metric(s) {sorted(unknown)}: choose among M1..M6, B1..B3")

    import gunicorn as gunicorn_package

    started = time.monotonic()
    machine = (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python "
               f"{platform.python_version()}, gunicorn {gunicorn_package.__version__} "
               f"(gthread, 1 worker), {'--quick' if args.quick else 'full run'}")
    print(f"machine: {machine}", flush=True)
    rows: list[Row] = []
    held_results: dict[str, Held] = {}
    if wanted & {"M1", "M2", "M3", "M4"}:
        with ExitStack() as stack:
            ports = {}
            for name in NAMES:
                _, ports[name] = stack.enter_context(
                    gunicorn(APPS[name], "--worker-class", "gthread", "--threads", THREADS))
            _, ceiling_port = stack.enter_context(rawserver())
            rows += throughput(ports, ceiling_port, settings, wanted)
            if "M3" in wanted:
                rows += short_responses(ports, ceiling_port, settings)
            if "M4" in wanted:
                rows += first_byte(ports, ceiling_port, settings)
    if "M5" in wanted:
        rows += held(settings, held_results)
    if "M6" in wanted:
        rows += slow_reader(settings)
    figures: list[broadcast.Figure] = []
    if wanted & {"B1", "B2", "B3"}:
        figures = broadcast.run(broadcast.QUICK if args.quick else broadcast.FULL, wanted,
                                args.broker, plain=held_results.get("plain"))
    if rows:
        print()
        for line in table(rows):
            print(line)
        print("\ntargets (live = the plain app wrapped in LiveMiddleware; ratios to plain):")
        for line in verdicts(rows):
            print(line)
    if figures:
        print()
        for line in broadcast.report(figures, args.broker):
            print(line)
    print(f"\n{len(rows) + len(figures)} rows in {time.monotonic() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine, "rows": [asdict(row) for row in rows],
                       "broadcast": [asdict(figure) for figure in figures]}, out, indent=1)


if __name__ == "__main__":
    main()
