"""Broadcast across processes and hosts: the Redis Streams broker.

::

    broker = RedisBroker("redis://localhost:6379/0")     # or broker_from_url(...)
    broker.publish("news", {"title": "hello"})            # any thread, any process
    app = broker.sse_app("news")                           # every worker, every host

Use it when more than one process serves the streams (gunicorn ``-w 2``,
several hosts): each channel is one Redis stream (``XADD``), each process
reads every channel it has subscribers for. Use ``MemoryBroker`` for a single
process. Needs redis-py (``pip install live_wsgi[redis]``) and Redis >= 6.2 or
Valkey; only commands those have are used. Not for Redis Cluster: one read
spans every watched channel's key.

design: one daemon reader thread per process, started by the first
subscribe in that process (a gunicorn ``--preload`` master may create the
broker; each forked worker starts its own reader), with its own connection,
waits on every watched channel in one ``XREAD BLOCK``. A channel watched anew
interrupts the blocked read at once (``CLIENT UNBLOCK`` from the command
pool; where ACLs forbid ``CLIENT``, within the block time instead). XREAD is
only the wake-up: the news is read with one atomic ``XRANGE`` per channel
from the reader's cursor, inclusive, so a cursor that was trimmed away before
the read (a burst larger than the history) resets the channel's subscribers
where XREAD would hand out what is left as if nothing was missed. The reader
owns its reconnect loop (redis-py retries are off everywhere: a retried
``XADD`` can publish twice, a retried blocking read waits minutes) and, once
back, goes on from each cursor the same way. Request threads publish and
read history through a pool with short timeouts.

Ids are Redis stream ids, so SPEC 9.3's rule is "is the subscriber's last id
still in the stream": ``XRANGE key <id> + COUNT n`` (inclusive) shows it as
its first row or not at all. ``0-0`` (a subscriber that started on an empty
channel) is still "in" the history while nothing was ever removed from the
stream: Redis >= 7 counts ``entries-added`` (``XINFO STREAM``), so that is
exact; Redis 6.2 has no such counter, and ``0-0`` counts as lost once the
stream holds ``maxlen`` entries (trimming never leaves fewer): a subscriber
that started on an empty channel and fell that far behind gets a ``Reset``
even when nothing was trimmed yet.

Memory: in Redis, each channel keeps about ``maxlen`` events (trimming with
``MAXLEN ~`` works on whole nodes of 100, so up to ~100 more), roughly
``maxlen * (payload + 70 bytes)``, and expires ``ttl`` seconds after its last
publish. Each process holds at most ``queue_size`` events per subscriber.
Redis's ``maxmemory-policy`` must not be an ``allkeys-*`` one for this
database: evicting a stream loses events, detected only as a ``Reset``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlsplit

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("RedisBroker needs redis-py: pip install 'live_wsgi[redis]'") from exc

from . import signals
from .broadcast import (
    ZERO,
    Broker,
    Event,
    EventId,
    check_channel,
    encode_data,
)
from .errors import BrokerUnavailable
from .sse import encode_event

log = logging.getLogger("live_wsgi")

#: Errors that mean "Redis cannot be reached right now" (``BusyLoadingError``,
#: a restarted Redis loading its data, is a ``ConnectionError`` too).
_DOWN: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError, OSError)
#: Events one read takes per channel (the rest comes with the next read).
READ_COUNT = 500
#: The reader's socket timeout is the block time plus this: a read that takes
#: longer means a dead connection (half-open), not a quiet channel.
READ_MARGIN = 2.0
#: The reader's reconnect backoff: 0.1 s doubling up to 2 s.
BACKOFF_FIRST, BACKOFF_MAX = 0.1, 2.0
#: How long waking the reader for a new channel may keep trying (a read
#: that was sent but has not reached Redis yet cannot be unblocked).
UNBLOCK_PATIENCE = 0.25
#: Ids are two unsigned 64-bit integers in Redis.
_ID_LIMIT = 2**64


class RedisBroker(Broker):
    """A broker on Redis Streams: every process on one Redis shares the channels.

    :param url: ``redis://[user:password@]host:port/db``, ``rediss://…`` (TLS)
        or ``unix:///path/to/redis.sock?db=0``.
    :param prefix: prepended to a channel's name to make its Redis key.
    :param maxlen: events a channel keeps (approximately, see the module doc):
        how far back a client can resume.
    :param ttl: seconds a channel is kept after its last publish (None: for
        ever).
    :param queue_size: events a subscriber may have waiting before it catches
        up from Redis instead.
    :param timeout: seconds to connect, and for a publish or a history read
        to answer: ``publish`` raises ``BrokerUnavailable`` about that soon
        when Redis is down.
    :param block: seconds one blocking read waits in Redis; the bound on
        picking up a new channel where ``CLIENT UNBLOCK`` is not allowed.

    Signals ``broker_disconnected`` and ``broker_reconnected``
    (``live_wsgi.signals``) come from the reader: a process with
    subscriptions lost or regained Redis.
    """

    def __init__(self, url: str, *, prefix: str = "live:", maxlen: int = 1000,
                 ttl: int | None = 86400, queue_size: int = 64, timeout: float = 1.0,
                 block: float = 1.0) -> None:
        super().__init__(queue_size=queue_size)
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"a Redis URL starts with redis://, rediss:// or unix://, "
                             f"not {url!r}")
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a str, not {prefix!r}")
        for name, value, low in (("maxlen", maxlen, 1), ("ttl", ttl, 1)):
            if name == "ttl" and value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, not {value!r}")
        for name, seconds in (("timeout", timeout), ("block", block)):
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) \
                    or not 0 < seconds <= 3600:
                raise ValueError(f"{name} must be a number of seconds > 0, not {seconds!r}")
        self.url = url
        self.prefix = prefix
        self.maxlen = maxlen
        self.ttl = ttl
        self.timeout = float(timeout)
        self.block = float(block)
        self._where = _redacted(url)
        self._reset_process_state()

    def __repr__(self) -> str:
        return f"<RedisBroker {self._where} prefix={self.prefix!r}>"

    def _reset_process_state(self) -> None:
        """What belongs to one process: the reader, its cursors, connections."""
        self._lock = threading.Lock()
        # Notified when the watched channels change, when a read returns and at
        # shutdown; waited on by an idle reader and by _unblock().
        self._wakeup = threading.Condition(self._lock)
        # Watched channels -> the id up to which the reader dispatched them;
        # None: start at the channel's top once Redis can be read.
        self._cursors: dict[str, EventId | None] = {}
        # Bumped by every change the reader must see; _reading is the value
        # its current XREAD was built from (None: not reading).
        self._generation = 0
        self._reading: int | None = None
        self._reader: threading.Thread | None = None
        self._reader_id: int | None = None  # its CLIENT ID, for CLIENT UNBLOCK
        self._unblock_denied = False
        self._stop = threading.Event()
        self._client: redis.Redis | None = None
        self._released = False  # shutdown closed the pool

    def _after_fork(self) -> None:
        # The parent's reader thread and connections are not ours: start
        # afresh (the inherited sockets are left to the parent).
        super()._after_fork()
        self._reset_process_state()

    # -- connections -----------------------------------------------------------------

    def _connect(self, *, socket_timeout: float, single: bool) -> redis.Redis:
        return redis.Redis.from_url(
            self.url,
            decode_responses=True,
            protocol=2,  # one reply shape on redis-py 5 to 8
            socket_connect_timeout=self.timeout,
            socket_timeout=socket_timeout,
            retry=Retry(NoBackoff(), 0),  # never retried: see the module doc
            health_check_interval=0,
            single_connection_client=single,
        )

    def _commands(self) -> redis.Redis:
        """The command pool: publishes and history reads, from any thread."""
        self._check_process()
        if self._closing:
            raise BrokerUnavailable("the broker was shut down")
        return self._command_client()

    def _command_client(self) -> redis.Redis:
        client = self._client
        if client is None:
            with self._lock:
                if self._client is None:
                    if self._released:  # shut down: never a new pool
                        raise BrokerUnavailable("the broker was shut down")
                    self._client = self._connect(socket_timeout=self.timeout, single=False)
                client = self._client
        return client

    def _unavailable(self, what: str, exc: BaseException) -> BrokerUnavailable:
        return BrokerUnavailable(f"Redis at {self._where} is unreachable: {what} failed "
                                 f"({type(exc).__name__}: {exc})")

    # -- the backend ------------------------------------------------------------------

    def publish(self, channel: str, data: object, *, event: str | None = None) -> str:
        """Publish ``data`` (a str, or JSON) to ``channel``; returns its id.

        Thread-safe. Raises ``BrokerUnavailable`` within about ``timeout``
        seconds when Redis cannot be reached; it is never retried (a retry
        after a timeout could publish twice).
        """
        check_channel(channel)
        text = encode_data(data)
        fields = {"data": text}
        if event is not None:
            encode_event("", event=event)  # the same checks as on the wire
            fields = {"event": event, "data": text}
        key = self.prefix + channel
        pipe = self._commands().pipeline(transaction=True)
        pipe.xadd(key, fields, maxlen=self.maxlen, approximate=True)  # type: ignore[arg-type]
        if self.ttl is not None:
            pipe.expire(key, self.ttl)
        try:
            replies = pipe.execute()
        except redis.TimeoutError as exc:
            raise BrokerUnavailable(
                f"Redis at {self._where} did not answer within {self.timeout:g} s: the "
                f"publish to {channel!r} may or may not have happened") from exc
        except _DOWN as exc:
            raise self._unavailable(f"the publish to {channel!r}", exc) from exc
        return str(replies[0])

    def _top(self, channel: str) -> EventId:
        try:
            return self._top_with(self._commands(), channel)
        except _DOWN as exc:
            raise self._unavailable(f"reading the top of {channel!r}", exc) from exc

    def _top_with(self, client: redis.Redis, channel: str) -> EventId:
        rows: Any = client.xrevrange(self.prefix + channel, "+", "-", count=1)
        return (EventId.parse(rows[0][0]) or ZERO) if rows else ZERO

    def _history(self, channel: str, after: EventId, limit: int) -> tuple[bool, list[Event]]:
        try:
            return self._history_with(self._commands(), channel, after, limit)
        except _DOWN as exc:
            raise self._unavailable(f"reading the history of {channel!r}", exc) from exc

    def _history_with(self, client: redis.Redis, channel: str, after: EventId,
                      limit: int) -> tuple[bool, list[Event]]:
        return self._histories(client, {channel: after}, limit)[channel]

    def _histories(self, client: redis.Redis, wanted: dict[str, EventId],
                   limit: int) -> dict[str, tuple[bool, list[Event]]]:
        """``_history`` of several channels in one atomic round trip: up to
        ``limit`` events after each one's id, and whether that id is still
        there (a single reply answers both, so nothing is trimmed between)."""
        pipe = client.pipeline(transaction=True)
        plan: list[tuple[str, EventId, int]] = []  # channel, after, replies
        for channel, after in wanted.items():
            key = self.prefix + channel
            if after == ZERO:
                pipe.xrange(key, "-", "+", count=limit)
                pipe.xinfo_stream(key)
                plan.append((channel, after, 2))
            elif 0 <= after.ms < _ID_LIMIT and 0 <= after.seq < _ID_LIMIT:
                # Inclusive: `after` itself is the first row iff it is still there.
                pipe.xrange(key, str(after), "+", count=limit + 1)
                plan.append((channel, after, 1))
            else:
                plan.append((channel, after, 0))  # not an id Redis could have issued
        replies: list[Any] = pipe.execute(raise_on_error=False) if len(pipe) else []
        results = {}
        index = 0
        for channel, after, size in plan:
            results[channel] = self._history_reply(after, replies[index:index + size])
            index += size
        return results

    def _history_reply(self, after: EventId, replies: list[Any]) -> tuple[bool, list[Event]]:
        if not replies:
            return False, []
        rows = replies[0]
        if isinstance(rows, Exception):
            raise rows
        if after != ZERO:
            if not rows or EventId.parse(rows[0][0]) != after:
                return False, []
            return True, [_event(row) for row in rows[1:]]
        # From before everything: found iff nothing was ever removed.
        info = replies[1]
        if isinstance(info, Exception):
            if isinstance(info, redis.ResponseError) and not rows:
                return True, []  # no such key: nothing published, or expired
            raise info
        added = info.get("entries-added")  # Redis >= 7
        length = int(info["length"])
        found = int(added) == length if added is not None else length < self.maxlen
        if not found:
            return False, []
        return True, [_event(row) for row in rows]

    def _watch_channel(self, channel: str, top: EventId | None) -> EventId | None:
        self._start_reader()
        with self._lock:
            self._cursors[channel] = top
            self._generation += 1
            generation = self._generation
            self._wakeup.notify_all()
        self._unblock(generation)
        return top

    def _cursor(self, channel: str, top: EventId | None) -> EventId | None:
        generation = None
        with self._lock:
            cursor = self._cursors.get(channel)
            if cursor is None and top is not None and channel in self._cursors:
                # The reader has not resolved this channel's start yet (Redis
                # was unreachable): a fresh top resolves it.
                self._cursors[channel] = cursor = top
                self._start_pending(channel, top)
                self._generation += 1
                generation = self._generation
                self._wakeup.notify_all()
        if generation is not None:
            self._unblock(generation)
        return cursor

    def _unwatch_channel(self, channel: str) -> None:
        with self._lock, self._subs_lock:
            if channel not in self._subs:  # unless a new subscriber came meanwhile
                self._cursors.pop(channel, None)

    def _shutdown_backend(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        self._check_process()
        with self._lock:
            self._generation += 1
            generation = self._generation
            self._wakeup.notify_all()
            reader = self._reader
        self._stop.set()
        if reader is not None:
            self._unblock(generation)
            reader.join(max(0.0, deadline - time.monotonic()))
            if reader.is_alive():
                log.warning("live_wsgi: the broker's reader did not stop within %g s", timeout)
        with self._lock:
            client, self._client = self._client, None
            self._released = True
        if client is not None:
            client.close()
            client.connection_pool.disconnect()

    # -- the reader --------------------------------------------------------------------

    def _start_reader(self) -> None:
        self._check_process()
        with self._lock:
            if self._reader is None and not self._closing:
                self._reader = threading.Thread(target=self._read_loop,
                                                name="live_wsgi-broker-reader", daemon=True)
                self._reader.start()

    def _unblock(self, generation: int) -> None:
        """Interrupt the reader's XREAD if it was built before ``generation``."""
        deadline = time.monotonic() + UNBLOCK_PATIENCE
        while not self._unblock_denied:
            with self._lock:
                reader_id = self._reader_id
                if self._reading is None or self._reading >= generation or reader_id is None:
                    return
            try:
                if self._command_client().client_unblock(reader_id):
                    return
            except redis.ResponseError as exc:  # an ACL without CLIENT
                self._deny_unblock(exc)
                return
            except _DOWN:
                return  # the reader finds out itself
            # Not blocked (yet): the XREAD is on its way to Redis, or just returned.
            with self._lock:
                if time.monotonic() >= deadline:
                    return
                if self._reading is not None and self._reading < generation:
                    self._wakeup.wait(0.002)

    def _deny_unblock(self, exc: BaseException) -> None:
        if not self._unblock_denied:
            self._unblock_denied = True
            log.info("live_wsgi: Redis at %s refuses CLIENT (%s): new channels are picked "
                     "up within %g s instead of at once", self._where, exc, self.block)

    def _read_loop(self) -> None:
        conn: redis.Redis | None = None
        backoff = BACKOFF_FIRST
        down_since: float | None = None
        try:
            while not self._closing:
                try:
                    if conn is None:
                        conn = self._connect_reader()
                        self._recover()
                        if down_since is not None:
                            downtime = time.monotonic() - down_since
                            log.warning("live_wsgi: Redis at %s is reachable again after "
                                        "%.1f s", self._where, downtime)
                            signals.emit(signals.broker_reconnected, self, downtime=downtime)
                        down_since = None
                        backoff = BACKOFF_FIRST
                    self._read_once(conn)
                except Exception as exc:
                    if conn is not None:
                        self._close_reader(conn)
                        conn = None
                    if self._closing:
                        return
                    if down_since is None:
                        down_since = time.monotonic()
                        if isinstance(exc, (*_DOWN, BrokerUnavailable)):
                            log.warning("live_wsgi: Redis at %s is unreachable (%s: %s); "
                                        "streams stay open, reconnecting", self._where,
                                        type(exc).__name__, exc)
                        else:
                            log.exception("live_wsgi: the broker's reader failed; "
                                          "reconnecting")
                        signals.emit(signals.broker_disconnected, self, error=exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        finally:
            if conn is not None:
                self._close_reader(conn)

    def _connect_reader(self) -> redis.Redis:
        conn = self._connect(socket_timeout=self.block + READ_MARGIN, single=True)
        reader_id = None
        if not self._unblock_denied:
            try:
                reader_id = int(conn.client_id())
            except redis.ResponseError as exc:
                self._deny_unblock(exc)
            except BaseException:
                self._close_reader(conn)
                raise
        with self._lock:
            self._reader_id = reader_id
        return conn

    def _close_reader(self, conn: redis.Redis) -> None:
        with self._lock:
            self._reader_id = None
        try:
            conn.close()
            conn.connection_pool.disconnect()
        except Exception:  # closing a broken connection: nothing left to do
            log.debug("live_wsgi: closing the reader's connection failed", exc_info=True)

    def _recover(self) -> None:
        """After (re)connecting: go on where each channel was if its cursor is
        still in the stream; otherwise its history was lost (a restart without
        persistence, an expiry): its subscribers get a Reset (SPEC 9.3, 9.6)."""
        with self._lock:
            watched = [ch for ch, c in self._cursors.items() if c is not None]
        self._advance(watched)
        self._wake_all()  # catch-ups that stalled on the outage retry now

    def _read_once(self, conn: redis.Redis) -> None:
        client = self._command_client()
        with self._lock:
            unresolved = [ch for ch, c in self._cursors.items() if c is None]
        for channel in unresolved:
            top = self._top_with(client, channel)
            with self._lock:
                if channel in self._cursors and self._cursors[channel] is None:
                    self._cursors[channel] = top
                    self._start_pending(channel, top)
        with self._lock:
            if self._closing:
                return
            streams = {self.prefix + ch: str(c) for ch, c in self._cursors.items()
                       if c is not None}
            if not streams:
                if not self._cursors:
                    self._wakeup.wait()  # idle until a channel is watched
                return
            self._reading = self._generation
        try:
            # Only a wake-up: which channels have news. The news itself is read
            # by _advance, which can tell whether the cursor was trimmed first.
            reply: Any = conn.xread(streams, count=1,  # type: ignore[arg-type]
                                    block=max(1, round(self.block * 1000)))
        finally:
            with self._lock:
                self._reading = None
                self._wakeup.notify_all()
        ready = [key[len(self.prefix):] for key, _ in _streams(reply)]
        if ready:
            self._advance(ready)

    def _advance(self, channels: list[str]) -> None:
        """Dispatch what follows each channel's cursor, or reset the channel
        when its cursor is gone from the stream (XREAD alone would skip the
        trimmed stretch silently)."""
        client = self._command_client()
        with self._lock:
            wanted = {ch: c for ch in channels if (c := self._cursors.get(ch)) is not None}
        results = self._histories(client, wanted, READ_COUNT)
        for channel, (found, events) in results.items():
            if not found:
                top = self._top_with(client, channel)
                with self._lock:
                    if self._cursors.get(channel) == wanted[channel]:  # unchanged meanwhile
                        self._cursors[channel] = top
                        self._lost_history(channel)
                continue
            if not events:
                continue
            with self._lock:
                if self._cursors.get(channel) != wanted[channel]:
                    continue  # unwatched or watched anew meanwhile: read again
                # The cursor moves before the dispatch: a subscriber that joins
                # in between sees a cursor past its start and catches up.
                self._cursors[channel] = events[-1].key
            self._dispatch(channel, events)


def _event(row: Any) -> Event:
    entry_id, fields = row
    return Event(str(entry_id), fields.get("event"), fields.get("data", ""))


def _streams(reply: Any) -> list[tuple[str, list[Any]]]:
    """XREAD's reply as (key, rows) pairs, in either of redis-py's shapes."""
    if not reply:
        return []
    if isinstance(reply, dict):
        pairs = list(reply.items())
        # RESP3 in redis-py wraps each key's rows in one more list.
        return [(key, rows[0] if rows and isinstance(rows[0], list) else rows)
                for key, rows in pairs]
    return [(key, rows) for key, rows in reply]


def _redacted(url: str) -> str:
    """``url`` without its credentials, for logs and errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"
