"""The broadcast benchmarks' broker, and B3's load from a process of its own.

    python -m benchmarks.publisher NAME CHANNELS COUNT RATE

publishes COUNT events at RATE a second, round robin over the channels
``NAME-0`` .. ``NAME-<CHANNELS-1>``, to the broker of ``LIVE_WSGI_BROKER``;
each event's data is the ``time.monotonic()`` it was published at (one clock
for every process of the machine). With Redis, B3 runs it beside the server:
the publisher, the worker that holds a stream and the client that reads it
are three processes. (The in-process broker can only be published to from the
worker itself: ``/publish-load`` in ``benchmarks.apps`` runs the same loop.)

Light on purpose (no Flask): its start-up is not part of any figure, but a
short one keeps B3 short.
"""

from __future__ import annotations

import os
import sys
import time
from urllib.parse import urlsplit

from live_wsgi.broadcast import Broker, broker_from_url

#: The keys of one benchmark run in a Redis (``benchmarks.broadcast`` sets a
#: prefix of the run's own for its servers and this process).
PREFIX_ENV = "LIVE_WSGI_BENCH_PREFIX"
#: Seconds a benchmark channel outlives its last publish in a Redis.
REDIS_TTL = 3600


def broker_for(url: str) -> Broker:
    """The broker the benchmarks use for ``url``: with Redis, under the run's
    key prefix, and expiring within the hour (a Redis of your own is not left
    with a day of benchmark channels)."""
    if urlsplit(url).scheme == "memory":
        return broker_from_url(url)
    return broker_from_url(url, prefix=os.environ.get(PREFIX_ENV, "bench:"), ttl=REDIS_TTL)


def publish_load(broker: Broker, name: str, channels: int, count: int, rate: float) -> int:
    """Publish ``count`` monotonic stamps at ``rate`` a second over ``channels``
    channels ``name-0`` ..., round robin; returns ``count`` once done."""
    started = time.monotonic()
    for n in range(count):
        pause = started + n / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        broker.publish(f"{name}-{n % channels}", f"{time.monotonic():.6f}")
    return count


def main() -> None:
    name, channels, count, rate = sys.argv[1:]
    broker = broker_for(os.environ.get("LIVE_WSGI_BROKER", "memory://"))
    try:
        publish_load(broker, name, int(channels), int(count), float(rate))
    finally:
        broker.shutdown()


if __name__ == "__main__":
    main()
