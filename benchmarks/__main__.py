"""``make bench``: live_wsgi against the server's own limit, in one run.

Starts each app of ``benchmarks.apps`` under its own gunicorn (gthread, one
worker) on loopback, drives it from this client process (and ``wrk``), and
prints one table: absolute figures and ratios to the plain generator app
measured in the same run (medians of several repetitions, interleaved so
drift hits every app alike), then the targets, met or missed, and live
against the naive peer (``benchmarks.naive``) on every metric.

The client's own ceiling is measured against ``benchmarks.rawserver``, a
trivial raw-socket server: when it is far above every app, the client is not
what limits them.

Then the broadcast figures (B1-B3, ``benchmarks.broadcast``), in a table of
their own per broker: each against what it is compared with in the same run,
then each broker against the first. ``--broker`` may be repeated;
``redis-server`` starts a Redis of the run's own (``make bench`` measures
``memory://`` and that).

    python -m benchmarks [--quick] [--reps N] [--only M1,M7,B2] [--json FILE]
                         [--broker URL|redis-server ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from . import broadcast, client, idle_streams, scale
from .apps import APPS
from .held_streams import Held, held_together
from .server import (
    gunicorn_command,
    gunicorns,
    proc_status,
    rawserver_command,
    serving,
    worker_pid,
)

#: Columns of the table: the apps, the limit first.
NAMES = list(APPS)
#: The apps that put a middleware in front of ``plain_app``'s routes (M3's
#: second route goes straight through them).
MIDDLEWARES = {"live", "naive", "flask+live"}
#: M7 and M9 measure the plain app, live_wsgi and the naive peer.
TRIO = ["plain", "live", "naive"]
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
    m7_streams: int
    m7_seconds: float
    m8_streams: int
    m9_rows: int
    m9_reps: int


FULL = Settings(reps=5, m1_count=200_000, m2_count=8192, m3_seconds=5, m3_reps=3,
                m4_rounds=20, m4_reps=3, m5_streams=1000, m5_events=30, m6_seconds=5,
                m7_streams=1000, m7_seconds=60, m8_streams=10_000, m9_rows=1_000_000,
                m9_reps=3)
QUICK = Settings(reps=3, m1_count=20_000, m2_count=4096, m3_seconds=1, m3_reps=1,
                 m4_rounds=5, m4_reps=1, m5_streams=200, m5_events=3, m6_seconds=2,
                 m7_streams=200, m7_seconds=10, m8_streams=2000, m9_rows=200_000, m9_reps=1)
METRICS = ["M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8", "M9", "B1", "B2", "B3"]
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
        if value is None or not reference or not math.isfinite(value * reference):
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
        return verdict(value, self.limit, self.at_most)


def verdict(value: float, limit: float, at_most: bool) -> str:
    """met, or MISSED and by how much of ``limit``."""
    over = value - limit if at_most else limit - value
    if over <= 0:
        return "met"
    if not limit or math.isinf(over):
        return "MISSED"
    return f"MISSED by {over / abs(limit):.1%}"


TARGETS = [
    Target("m1_64", "M1 64 B chunks/s", 2.0),
    Target("m1_1k", "M1 1 KiB chunks/s", 2.0),
    Target("m2", "M2 64 KiB MB/s", 0.9),
    Target("m3_live", "M3 live route req/s", 0.85),
    Target("m3_direct", "M3 non-live route req/s", 0.98),
    Target("m4_p99", "M4 TTFB p99", 1.2, at_most=True),
    Target("m5_delivered", "M5 all events delivered (1=yes)", 1.0, absolute=True, unit=""),
    Target("m5_rss", "M5 RSS per stream (gthread)", 40, at_most=True, absolute=True,
           unit=" KB"),
    Target("m6_growth", "M6 RSS growth, slow reader", M6_BOUND / 1000, at_most=True,
           absolute=True, unit=" KB"),
    Target("m7_cpu", "M7 CPU of idle streams (gthread)", 1.0, at_most=True, absolute=True,
           unit="%"),
    Target("m7_freed", "M7 hang-ups let go (probe interval)", 1.0, at_most=True,
           absolute=True, unit=" s"),
    Target("m8_delivered", "M8 delivered to all, fan-out (1=yes)", 1.0, absolute=True,
           unit=""),
    Target("m8_left", "M8 held after hang-up, fan-out", 0.0, at_most=True, absolute=True,
           unit=""),
    Target("m8_delivered_producer", "M8 delivered to all, producer", 1.0, absolute=True,
           unit=""),
    Target("m8_left_producer", "M8 held after hang-up, producer", 0.0, at_most=True,
           absolute=True, unit=""),
    Target("m9", "M9 CSV export rows/s", 0.95),
]


STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"  .. [{time.monotonic() - STARTED:4.0f} s] {message}", file=sys.stderr, flush=True)


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
            paths = ["/short", "/short-direct"] if name in MIDDLEWARES else ["/short"]
            for path in paths:
                rps = client.wrk(ports[name], path, 16, settings.m3_seconds)
                runs.setdefault((name, path), []).append(rps)
    live_row = Row("m3_live", "M3 live route req/s", "req/s", True,
                   ceiling=statistics.median(ceiling))
    direct_row = Row("m3_direct", "M3 non-live route req/s", "req/s", True,
                     ceiling=live_row.ceiling)
    for name in NAMES:
        live_row.values[name] = statistics.median(runs[(name, "/short")])
        direct_path = "/short-direct" if name in MIDDLEWARES else "/short"
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


# -- M9: a real export -------------------------------------------------------------------


def export(ports: dict[str, int], settings: Settings) -> list[Row]:
    rows = settings.m9_rows
    log(f"M9: a CSV export of {rows:,} rows x {settings.m9_reps} reps ({', '.join(TRIO)})")
    times: dict[str, list[float]] = {name: [] for name in TRIO}
    for _ in range(settings.m9_reps):
        for name in TRIO:
            times[name].append(client.download(ports[name], f"/export/{rows}")[0])
    row = Row("m9", "M9 CSV export rows/s", "rows/s", True)
    row.values = {name: rows / statistics.median(each) for name, each in times.items()}
    return [row]


# -- M5: held streams -----------------------------------------------------------------


def held(settings: Settings, results: dict[str, Held]) -> list[Row]:
    delivered = Row("m5_delivered", "M5 all delivered (1=yes)", "", True)
    rss = Row("m5_rss", "M5 RSS/stream KB", "KB", False)
    threads = Row("m5_threads", "M5 threads/stream", "", False)
    log(f"M5: {settings.m5_streams} streams x {settings.m5_events} events, 1/s, "
        f"on every app at once")
    results.update(held_together(NAMES, settings.m5_streams, settings.m5_events))
    for name in NAMES:
        result = results[name]
        delivered.values[name] = 1.0 if result.all_delivered else 0.0
        rss.values[name] = result.rss_per_stream / 1000
        threads.values[name] = result.threads_per_stream
    return [delivered, rss, threads]


# -- M6: a slow reader ----------------------------------------------------------------


def slow_reader(settings: Settings) -> list[Row]:
    """A slow reader on every app at once, each against its own worker."""
    growth = Row("m6_growth", "M6 RSS growth KB", "KB", False)
    path = "/chunks/65536/100000000?fresh=1"
    log(f"M6: reading 64 KiB every 10 ms for {settings.m6_seconds:g} s, every app at once")
    with gunicorns([APPS[name] for name in NAMES], "--worker-class", "gthread",
                   "--threads", THREADS) as served:
        pids = {name: worker_pid(proc.pid) for name, (proc, _) in zip(NAMES, served, strict=True)}
        ports = {name: port for name, (_, port) in zip(NAMES, served, strict=True)}

        def warm(name: str) -> None:  # the pool thread and the allocator's arenas exist
            client.slow_read(ports[name], path, M6_READ, M6_INTERVAL, 1.0, lambda: None)

        together([functools.partial(warm, name) for name in NAMES])
        time.sleep(0.5)  # let the servers notice the hang-ups before the baselines
        before = {name: proc_status(pid)["VmRSS"] for name, pid in pids.items()}
        peaks = {name: [value] for name, value in before.items()}

        def read(name: str) -> None:
            def sample() -> None:
                peaks[name].append(proc_status(pids[name])["VmRSS"])

            client.slow_read(ports[name], path, M6_READ, M6_INTERVAL, settings.m6_seconds,
                             sample)

        together([functools.partial(read, name) for name in NAMES])
    growth.values = {name: (max(peaks[name]) - before[name]) * KIB / 1000 for name in NAMES}
    return [growth]


def together(calls: list[Callable[[], None]]) -> None:
    """Run ``calls`` on threads of their own, side by side; raise the first error."""
    errors: list[BaseException] = []

    def run(call: Callable[[], None]) -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


# -- M7: the idle cost ----------------------------------------------------------------


def idle_cost(settings: Settings) -> list[Row]:
    log(f"M7: {settings.m7_streams} idle streams on each of {', '.join(TRIO)} at once, "
        f"CPU over {settings.m7_seconds:g} s, then {idle_streams.CLOSED} hang-ups each")
    results = idle_streams.idle_cost(TRIO, settings.m7_streams, settings.m7_seconds)
    cpu = Row("m7_cpu", "M7 CPU % of one core", "%", False)
    freed = Row("m7_freed", "M7 hang-ups let go s", "s", False)
    for name, result in results.items():
        cpu.values[name] = result.cpu_percent
        freed.values[name] = result.freed_after
    return [cpu, freed]


# -- M8: scale on gevent --------------------------------------------------------------


def gevent_scale(settings: Settings) -> list[Row]:
    streams = settings.m8_streams
    log(f"M8: {streams:,} idle streams on one gevent worker per route, one publish")
    results = scale.scale(list(scale.ROUTES), streams, log)

    def row(key: str, label: str, unit: str, value: Callable[[scale.Scale], float], route: str,
            higher_is_better: bool = False) -> Row:
        made = Row(key, label, unit, higher_is_better)
        made.values = {"plain": value(results["plain"]), "naive": value(results["naive"]),
                       "live": value(results[route])}
        return made

    rows = []
    # Live's two routes, each against the same plain and naive streams.
    for route, suffix, tag in (("live", "fan-out", ""), ("producer", "producer", "_producer")):
        rows += [
            row(f"m8_rss{tag}", f"M8 RSS/stream KB, {suffix}", "KB",
                lambda r: r.rss_per_stream / 1000, route),
            row(f"m8_p50{tag}", f"M8 delivery p50 ms, {suffix}", "ms", lambda r: r.p50 * 1000,
                route),
            row(f"m8_p99{tag}", f"M8 delivery p99 ms, {suffix}", "ms", lambda r: r.p99 * 1000,
                route),
            row(f"m8_delivered{tag}", f"M8 all delivered, {suffix}", "",
                lambda r: float(r.all_delivered), route, higher_is_better=True),
            row(f"m8_left{tag}", f"M8 held after hang-up, {suffix}", "", lambda r: r.left,
                route),
            row(f"m8_kept{tag}", f"M8 RSS kept KB/stream, {suffix}", "KB",
                lambda r: r.rss_kept_per_stream / 1000, route),
        ]
    return rows


# -- the table --------------------------------------------------------------------------


def fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    if math.isinf(value):
        return "never"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def table(rows: list[Row]) -> Iterator[str]:
    width = 32
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
        yield (f"  {target.label:<36} live {shown:>10}  target {wanted:<12} "
               f"{target.verdict(value)}")


def against_naive(rows: list[Row]) -> Iterator[str]:
    """live against the naive peer on every row both have: met when live is at
    least as good (a tie is met: both delivered every event, say)."""
    for row in rows:
        live, naive = row.values.get("live"), row.values.get("naive")
        if live is None or naive is None or math.isnan(live) or math.isnan(naive):
            continue
        if row.ratio("live") is not None and row.ratio("naive") is not None:
            shown = f"{row.ratio('live'):.2f}x", f"{row.ratio('naive'):.2f}x"
        else:
            shown = fmt(live), fmt(naive)
        yield (f"  {row.label:<36} live {shown[0]:>8}  naive {shown[1]:>8}  "
               f"{verdict(live, naive, at_most=not row.higher_is_better)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller loads, under 2 minutes")
    parser.add_argument("--reps", type=int, default=None, help="repetitions for M1/M2 (median)")
    parser.add_argument("--only", default=",".join(METRICS),
                        help="metrics to run, e.g. M1,M7,B2")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--broker", action="append", default=None,
                        help="broker URL for B1-B3 (default memory://; e.g. redis://...), "
                             "or redis-server for a Redis of the run's own; repeatable")
    args = parser.parse_args()
    settings = QUICK if args.quick else FULL
    if args.reps:
        settings = Settings(**{**asdict(settings), "reps": args.reps})
    wanted = {part.strip().upper() for part in args.only.split(",")}
    unknown = wanted - set(METRICS)
    if unknown:
        parser.error(f"unknown metric(s) {sorted(unknown)}: choose among M1..M9, B1..B3")

    import gunicorn as gunicorn_package

    machine = (f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, Python "
               f"{platform.python_version()}, gunicorn {gunicorn_package.__version__} "
               f"(gthread, 1 worker; gevent for M8), {'--quick' if args.quick else 'full run'}")
    print(f"machine: {machine}", flush=True)
    rows: list[Row] = []
    held_results: dict[str, Held] = {}
    if wanted & {"M1", "M2", "M3", "M4", "M9"}:
        commands = [(gunicorn_command(APPS[name], "--worker-class", "gthread",
                                      "--threads", THREADS), None) for name in NAMES]
        with serving([*commands, (rawserver_command(), None)]) as served:
            ports = {name: port for name, (_, port) in zip(NAMES, served, strict=False)}
            ceiling_port = served[-1][1]
            rows += throughput(ports, ceiling_port, settings, wanted)
            if "M9" in wanted:
                rows += export(ports, settings)
            if "M3" in wanted:
                rows += short_responses(ports, ceiling_port, settings)
            if "M4" in wanted:
                rows += first_byte(ports, ceiling_port, settings)
    if "M5" in wanted:
        rows += held(settings, held_results)
    if "M6" in wanted:
        rows += slow_reader(settings)
    if "M7" in wanted:
        rows += idle_cost(settings)
    if "M8" in wanted:
        rows += gevent_scale(settings)
    figures: dict[str, list[broadcast.Figure]] = {}
    chosen: list[broadcast.Backend] = []
    if wanted & {"B1", "B2", "B3"}:
        with broadcast.backends(args.broker or ["memory://"]) as chosen:
            figures = broadcast.run_all(broadcast.QUICK if args.quick else broadcast.FULL,
                                        wanted, chosen, plain=held_results.get("plain"))
    if rows:
        print()
        for line in table(rows):
            print(line)
        print("\ntargets (live = the plain app wrapped in LiveMiddleware; ratios to plain):")
        for line in verdicts(rows):
            print(line)
        print("\nlive against naive (the same plain app in benchmarks.naive), same run; "
              "met when live is at least as good:")
        for line in against_naive(rows):
            print(line)
    if figures:
        broadcast.print_results(figures, chosen)
    count = len(rows) + sum(len(each) for each in figures.values())
    print(f"\n{count} rows in {time.monotonic() - STARTED:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"machine": machine, "rows": [asdict(row) for row in rows],
                       "broadcast": {label: [asdict(figure) for figure in each]
                                     for label, each in figures.items()}}, out, indent=1)


if __name__ == "__main__":
    main()
