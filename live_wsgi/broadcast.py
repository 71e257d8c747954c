"""Broadcast: one publish reaches every open stream that watches a channel.

::

    from live_wsgi.broadcast import broker_from_url

    broker = broker_from_url(os.environ.get("LIVE_WSGI_BROKER", "memory://"))

    broker.publish("news", {"title": "hello"}, event="headline")   # from anywhere

    # A fan-out response: streams the channel as SSE, no pool thread, no code.
    app = broker.sse_app("news")

    # Or producer code of your own, on a live worker:
    with broker.subscribe("news", last_event_id=last_event_id(environ)) as events:
        for item in events:                   # Event(id, event, data), or Reset
            ...

Use it for notifications, chat, dashboards, job progress: one event, many
readers. Do not use it as a job queue: a channel keeps a bounded history
(``maxlen`` events), and a subscriber that falls further behind is told so
(``Reset``) rather than given everything.

design: event ids come from the broker (``ms-seq``, strictly increasing per
channel: Redis stream ids, and the same shape from ``MemoryBroker``) and are
compared as integer pairs, never as strings. One rule covers every way
history is lost (trimmed, expired, a broker restart, a forged id): replay is
gap-free iff the subscriber's last id is still in the channel's history,
otherwise it gets ``Reset`` and continues from the current top (SPEC 9.3).

The broker's reader never blocks on a subscriber (SPEC 9.4): each has a
bounded queue, and one that is full is marked *lagged* instead. A lagged
subscriber, once it has drained its queue, catches up from the channel's
history itself, then rejoins the live feed; events it sees twice on the way
are dropped by id. So memory per subscriber stays bounded and nobody's
slowness delays anybody else.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import urlsplit

from .body import HEARTBEAT, OPENING
from .channel import Doorbell
from .errors import BrokerUnavailable
from .probe import disconnect_probe, raw_client_socket
from .sse import CONTENT_TYPE, encode_event, last_event_id
from .watcher import watcher

if TYPE_CHECKING:
    from collections.abc import Callable

    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .stream import Stream
    from .watcher import Watch

log = logging.getLogger("live_wsgi")

#: The SSE event a client gets when its history is gone (SPEC 9.3).
RESET_EVENT = "stream-reset"

#: Every broker alive, so ``shutdown_all`` (the gunicorn hook) finds them.
brokers: weakref.WeakSet[Broker] = weakref.WeakSet()


class EventId(NamedTuple):
    """A broker event id: milliseconds and a sequence number, compared as ints."""

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: object) -> EventId | None:
        """The id ``text`` names, or None when it is not one (a forged id)."""
        if not isinstance(text, str) or len(text) > 48:
            return None
        ms, dash, seq = text.partition("-")
        if not (dash and ms.isascii() and ms.isdigit() and seq.isascii() and seq.isdigit()):
            return None
        return cls(int(ms), int(seq))


#: Before every event: where a subscription to an empty channel starts.
ZERO = EventId(0, 0)


class Event(NamedTuple):
    """One published event: its broker ``id``, the SSE ``event`` type, and
    ``data`` (a str; objects were published as compact JSON)."""

    id: str
    event: str | None
    data: str

    @property
    def key(self) -> EventId:
        return EventId.parse(self.id) or ZERO

    def json(self) -> Any:
        return json.loads(self.data)


class Reset(NamedTuple):
    """History is gone: events between the subscriber's last id and ``id``
    (the channel's top when it was noticed) cannot be replayed."""

    id: str


def encode_data(data: object) -> str:
    """What ``publish`` stores: ``str`` as is, anything else as compact JSON."""
    if isinstance(data, str):
        return data
    try:
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"broadcast data must be JSON without NaN/Infinity: {exc}") from exc
    except TypeError as exc:
        raise TypeError(f"broadcast data must be a str or JSON-serializable: {exc}") from exc


def check_channel(channel: object) -> str:
    if not isinstance(channel, str) or not channel or len(channel) > 200:
        raise ValueError(f"a channel is a non-empty str of at most 200 characters, not {channel!r}")
    if any(ch in channel for ch in "\r\n\x00"):
        raise ValueError(f"a channel name must not contain CR, LF or NUL: {channel!r}")
    return channel


class Subscription:
    """Events of one channel for one reader, in order, each once.

    Iterate it: items are ``Event`` and ``Reset``; the iteration ends when the
    subscription is closed (from any thread), the broker shuts down, or the
    live stream it belongs to is disconnected or shut down. ``get(timeout)``
    is the same one item at a time (None when ``timeout`` ran out).
    """

    def __init__(
        self,
        broker: Broker,
        channel: str,
        start: EventId,
        *,
        queue_size: int,
        lagged: bool,
        reset: bool,
        stream: Stream | None,
    ) -> None:
        self.broker = broker
        self.channel = channel
        self._lock = threading.Lock()
        # Rung (under _lock) by offer(), wake() and close(); get() sleeps on
        # it. One reader per subscription: a doorbell, not a Condition, and
        # a list, not a deque: a fan-out stream costs as little as a plain one.
        self._bell = Doorbell()
        self._queue: list[Event] = []
        self._queue_size = queue_size
        # The id of the last item handed out (or where the subscription
        # starts): nothing at or before it is handed out again.
        self._last = start
        # Must catch up from history before live items (it fell behind, or
        # it resumes from an id).
        self._lagged = lagged
        self._reset = reset
        self._closed = False
        self._stream = stream
        if stream is not None:
            stream.add_waker(self.wake)

    def __repr__(self) -> str:
        return f"<Subscription {self.channel!r} at {self._last}>"

    # -- the broker's side (never blocks) ------------------------------------

    def offer(self, event: Event) -> None:
        """A live event, from the broker's reader. Never blocks: a full queue
        marks the subscription lagged, and it catches up from history."""
        with self._lock:
            if self._closed or self._lagged or event.key <= self._last:
                return
            if len(self._queue) >= self._queue_size:
                self._lagged = True
                return
            self._queue.append(event)
            self._bell.ring()

    def fall_behind(self) -> None:
        """Catch up from history before anything live (nothing handed out yet)."""
        with self._lock:
            self._lagged = True
            self._queue.clear()

    def lost_history(self) -> None:
        """The broker lost this channel's history (a restart without
        persistence): catch up from the top, with a ``Reset``."""
        with self._lock:
            self._lagged = True
            self._queue.clear()
            self._last = _FORGOTTEN
            self._bell.ring()

    def start_at(self, cursor: EventId) -> None:
        """The broker's reader starts dispatching the channel after ``cursor``.

        A subscription made while the broker was unreachable starts there; one
        that is behind it (it resumed from an id) catches up from history,
        since what came up to ``cursor`` is never dispatched.
        """
        with self._lock:
            if self._last is _PENDING:
                self._last = cursor
            elif self._last < cursor and not self._lagged:
                self._lagged = True
                self._bell.ring()

    def wake(self) -> None:
        with self._lock:
            self._bell.ring()

    # -- the reader's side ----------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed or self._interrupted()

    def _interrupted(self) -> bool:
        stream = self._stream
        return stream is not None and (not stream.connected or stream.shutting_down)

    def close(self) -> None:
        """End the subscription (idempotent; from any thread)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            self._bell.ring()
        if self._stream is not None:
            self._stream.remove_waker(self.wake)
        self.broker._unwatch(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Event | Reset]:
        while True:
            item = self.get(None)
            if item is None:
                return
            yield item

    def get(self, timeout: float | None) -> Event | Reset | None:
        """The next item; None once ``timeout`` ran out or the subscription ended."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._lock:
                while True:
                    if self._closed or self._interrupted():
                        return None
                    if self._reset:
                        self._reset = False
                        return Reset(str(self._last))
                    while self._queue:
                        event = self._queue.pop(0)  # at most queue_size: cheap
                        key = event.key
                        if key > self._last:
                            self._last = key
                            return event
                    if self._lagged:
                        break  # catch up from history, without the lock
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    self._bell.sleep(self._lock, remaining)
            try:
                self._catch_up()
            except BrokerUnavailable:
                # The broker is down: stay lagged and try again when its
                # reader reconnects (it wakes every subscription) or after a
                # while. get() keeps returning None at its deadline meanwhile,
                # so a fan-out body goes on with its heartbeats.
                with self._lock:
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    if not (self._closed or self._interrupted()):
                        self._bell.sleep(self._lock, CATCH_UP_RETRY if remaining is None
                                         else min(remaining, CATCH_UP_RETRY))

    def _catch_up(self) -> None:
        """Fetch what this subscriber missed from the channel's history."""
        broker, channel = self.broker, self.channel
        after = self._last  # only this (the reading) thread moves _last
        if after is _FORGOTTEN or after is _PENDING:
            found = False
        else:
            found, rows = broker._history(channel, after, self._queue_size)
        if not found:
            # Gone from history (trimmed, expired, broker restart, forged):
            # say so, and go on from the top (SPEC 9.3).
            top = broker._top(channel)
            with self._lock:
                self._last = top
                self._reset = True
                self._lagged = True
            found, rows = broker._history(channel, top, self._queue_size)
            if not found:  # the top itself went meanwhile: try again
                return
        with self._lock:
            self._queue.extend(row for row in rows if row.key > self._last)
            if len(rows) < self._queue_size:
                # At the top: back to the live feed. What the reader offered
                # while this was lagged was dropped; fetch once more to close
                # that window, merging by id (duplicates go, order stays).
                self._lagged = False
        if self._lagged:
            return
        found, late = broker._history(channel, rows[-1].key if rows else after, self._queue_size)
        if not found or not late:
            return
        with self._lock:
            merged = {event.key: event for event in self._queue}
            merged.update((event.key, event) for event in late if event.key > self._last)
            ordered = [merged[key] for key in sorted(merged)]
            if len(ordered) > self._queue_size:
                ordered = ordered[: self._queue_size]
                self._lagged = True
            self._queue = ordered


#: The cursor of a subscription whose channel lost its history.
_FORGOTTEN = EventId(-1, -1)
#: The start of a subscription made while the broker was unreachable: the
#: backend sets it (``start_at``) before it dispatches anything to it.
_PENDING = EventId(-2, -2)
#: Seconds a subscription waits before it retries a catch-up the broker
#: could not serve (the reader wakes it sooner when it reconnects).
CATCH_UP_RETRY = 2.0


class Broker:
    """What every backend has: subscriptions, their dispatch, the fan-out app.

    A backend implements ``publish``, ``_top`` (the channel's newest id),
    ``_history`` (events after an id, and whether that id is still known),
    and ``_watch_channel``/``_cursor``/``_unwatch_channel`` (start, go on and
    stop reading a channel; it calls ``_dispatch`` with new events in order).
    ``_top`` and ``_history`` raise ``BrokerUnavailable`` when the broker
    cannot be reached: subscriptions then wait for it instead of failing.

    :param queue_size: events a subscriber may have waiting before it is
        marked lagged and catches up from history instead.
    """

    def __init__(self, *, queue_size: int = 64) -> None:
        if isinstance(queue_size, bool) or not isinstance(queue_size, int) or queue_size < 1:
            raise ValueError(f"queue_size must be an int >= 1, not {queue_size!r}")
        self.queue_size = queue_size
        self._subs_lock = threading.Lock()
        self._subs: dict[str, set[Subscription]] = {}
        self._watch_lock = threading.Lock()
        self._closing = False
        self._pid = os.getpid()
        brokers.add(self)

    # -- what a backend implements -------------------------------------------

    def publish(self, channel: str, data: object, *, event: str | None = None) -> str:
        """Publish ``data`` (a str, or JSON) to ``channel``; returns its id."""
        raise NotImplementedError

    def _top(self, channel: str) -> EventId:
        raise NotImplementedError

    def _history(self, channel: str, after: EventId, limit: int) -> tuple[bool, list[Event]]:
        """Up to ``limit`` events after ``after``, and whether ``after`` is still
        in the channel's history (``ZERO`` is: it is before everything)."""
        raise NotImplementedError

    def _watch_channel(self, channel: str, top: EventId | None) -> EventId | None:
        """Start reading ``channel`` (its first local subscriber).

        ``top`` is the channel's newest id as ``subscribe`` just read it, or
        None when it did not (a resume from an id, or the broker was
        unreachable). Returns the cursor up to which events were dispatched
        already, or None when the reader has none yet: it then starts at the
        channel's top once it can read it, and calls ``_start_pending`` with
        that top before it dispatches anything.
        """
        raise NotImplementedError

    def _cursor(self, channel: str, top: EventId | None) -> EventId | None:
        """A further local subscriber of a watched ``channel``: how far the reader
        has dispatched it (None: not known yet). ``top`` as for ``_watch_channel``."""
        return None

    def _unwatch_channel(self, channel: str) -> None:
        """The last local subscriber of ``channel`` left."""

    def _shutdown_backend(self, timeout: float) -> None:
        """Stop reading, close connections."""

    # -- shared ----------------------------------------------------------------

    def current_id(self, channel: str) -> str:
        """The channel's newest id: embed it in a rendered page and subscribe
        from it, so nothing published between render and subscribe is lost.
        Raises ``BrokerUnavailable`` when the broker cannot be reached."""
        return str(self._top(check_channel(channel)))

    def subscribe(
        self,
        channel: str,
        *,
        last_event_id: str | None = None,
        stream: Stream | None = None,
        queue_size: int | None = None,
    ) -> Subscription:
        """Subscribe to ``channel``; use it as a context manager.

        Without ``last_event_id`` it starts at the current top: nothing from
        before. With one it replays what came after it, or starts with a
        ``Reset`` when that id is no longer in the history. Inside a live
        request, the subscription ends when the stream is disconnected or the
        middleware shuts down (``stream`` defaults to the current response's).

        A broker that cannot be reached does not make it fail (SPEC 9.6): it
        starts where this process's reader last read the channel, or at the
        channel's top once the broker is back; a resume waits for the broker.
        """
        check_channel(channel)
        if self._closing:
            raise BrokerUnavailable("the broker was shut down")
        self._check_process()
        if stream is None:
            stream = _current_stream()
        size = self.queue_size if queue_size is None else queue_size
        top: EventId | None = None
        if last_event_id is None and channel in self._subs:
            # This process reads the channel already: start where its reader
            # is (the top as far as this process knows), without asking the
            # broker: one round trip less per stream of a popular channel.
            start, lagged, reset = _PENDING, False, False
        elif last_event_id is None:
            try:
                top = self._top(channel)
            except BrokerUnavailable:
                # Never refuse a subscriber because the broker is down (SPEC
                # 9.6): it starts where this process's reader is, or at the
                # top once the reader reaches the broker again.
                top = None
            start, lagged, reset = (_PENDING if top is None else top), False, False
        else:
            parsed = EventId.parse(last_event_id)
            if parsed is None:  # forged: nothing to resume from
                start, lagged, reset = _FORGOTTEN, True, False
            else:
                start, lagged, reset = parsed, True, False
        sub = Subscription(self, channel, start, queue_size=size, lagged=lagged,
                           reset=reset, stream=stream)
        try:
            with self._watch_lock:  # subscribes one at a time: cursors agree
                with self._subs_lock:
                    subs = self._subs.get(channel)
                    first = subs is None
                    if first:
                        subs = self._subs[channel] = set()
                    assert subs is not None
                    subs.add(sub)
                watch = self._watch_channel if first else self._cursor
                cursor = watch(channel, top)
        except BaseException:
            sub.close()
            raise
        if start is _PENDING:
            if cursor is not None:
                # The top as far as this process has read it: what the reader
                # dispatches from now on is after it.
                sub.start_at(cursor)
        elif cursor is not None and cursor > start:
            # The reader had dispatched past this subscriber's start before it
            # joined: take that stretch, and what was offered since, from
            # history instead (no gap, nothing twice).
            sub.fall_behind()
        return sub

    def _unwatch(self, sub: Subscription) -> None:
        with self._subs_lock:
            subs = self._subs.get(sub.channel)
            if subs is None:
                return
            subs.discard(sub)
            if subs:
                return
            del self._subs[sub.channel]
        self._unwatch_channel(sub.channel)

    def _dispatch(self, channel: str, events: list[Event]) -> None:
        """New events of ``channel``, in order: offer them to its subscribers."""
        with self._subs_lock:
            subs = list(self._subs.get(channel, ()))
        for sub in subs:
            for event in events:
                sub.offer(event)

    def _lost_history(self, channel: str) -> None:
        with self._subs_lock:
            subs = list(self._subs.get(channel, ()))
        for sub in subs:
            sub.lost_history()

    def _start_pending(self, channel: str, top: EventId) -> None:
        """The reader resolved where it reads ``channel`` from (``_watch_channel``
        returned None): every subscription of it learns (``start_at``)."""
        with self._subs_lock:
            subs = list(self._subs.get(channel, ()))
        for sub in subs:
            sub.start_at(top)

    def _wake_all(self) -> None:
        """Wake every subscription (the broker is reachable again: a stalled
        catch-up retries at once)."""
        with self._subs_lock:
            subs = [sub for channel in self._subs.values() for sub in channel]
        for sub in subs:
            sub.wake()

    def _after_fork(self) -> None:
        """In a forked child: the parent's subscriptions are read by the
        parent's threads, which the child does not have; locks held by them
        at the fork would never be released here."""
        self._subs_lock = threading.Lock()
        self._subs = {}
        self._watch_lock = threading.Lock()
        self._pid = os.getpid()

    def _check_process(self) -> None:
        """Forked without ``os.register_at_fork``'s hook (a C extension's fork):
        notice it before touching any per-process state."""
        if self._pid != os.getpid():
            self._after_fork()

    def subscriptions(self) -> int:
        """How many subscriptions are open in this process."""
        with self._subs_lock:
            return sum(len(subs) for subs in self._subs.values())

    def shutdown(self, grace: float = 0.0, *, timeout: float = 5.0) -> None:
        """Wake and end every subscription, stop reading, close connections
        (SPEC 9.8). ``grace`` is accepted for symmetry with
        ``LiveMiddleware.shutdown``; subscriptions end at once."""
        self._closing = True
        with self._subs_lock:
            subs = [sub for channel in self._subs.values() for sub in channel]
        for sub in subs:
            sub.close()
        self._shutdown_backend(timeout)

    # -- the fan-out response ----------------------------------------------------

    def sse_app(
        self,
        channel: str | None = None,
        *,
        heartbeat: float | None = 15.0,
        probe_interval: float | None = 1.0,
        retry: int | None = None,
    ) -> FanOutApp:
        """A WSGI app streaming ``channel`` as server-sent events, with no pool
        thread: the server thread drains the subscription itself (SPEC 9.7).

        ``channel=None``: the app streams ``environ["live_wsgi.channel"]`` (set
        it in a router or a wrapper). Ids, replay from ``Last-Event-ID``, a
        ``stream-reset`` event when history is gone, heartbeats and disconnect
        probes come with it. Do not route it through ``LiveMiddleware``: it
        needs no worker.
        """
        return FanOutApp(self, channel, heartbeat=heartbeat,
                         probe_interval=probe_interval, retry=retry)


def _current_stream() -> Stream | None:
    from .response import _current

    response = _current.get(None)
    return None if response is None else response.stream


class MemoryBroker(Broker):
    """The in-process broker: the default, for tests and single-process apps.

    Each channel keeps its last ``maxlen`` events. Ids are ``ms-seq`` from
    this process's clock, kept strictly increasing, so ids from a previous
    run are never reissued: a client resuming with one gets a ``Reset``.
    """

    def __init__(self, *, maxlen: int = 1000, queue_size: int = 64) -> None:
        super().__init__(queue_size=queue_size)
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or maxlen < 1:
            raise ValueError(f"maxlen must be an int >= 1, not {maxlen!r}")
        self.maxlen = maxlen
        # One lock orders ids, history and dispatch: a subscriber sees events
        # in id order, and history and the live feed agree.
        self._lock = threading.RLock()
        self._history_of: dict[str, deque[Event]] = {}
        self._tops: dict[str, EventId] = {}
        # The newest id trimmed from each channel's history: a cursor at or
        # before it can no longer be replayed without a gap.
        self._trimmed: dict[str, EventId] = {}
        self._last_id = ZERO

    def _next_id(self) -> EventId:
        ms = time.time_ns() // 1_000_000
        last = self._last_id
        new = EventId(ms, 0) if ms > last.ms else EventId(last.ms, last.seq + 1)
        self._last_id = new
        return new

    def publish(self, channel: str, data: object, *, event: str | None = None) -> str:
        check_channel(channel)
        text = encode_data(data)
        if event is not None:
            encode_event("", event=event)  # the same checks as on the wire
        with self._lock:
            if self._closing:
                raise BrokerUnavailable("the broker was shut down")
            key = self._next_id()
            item = Event(str(key), event, text)
            history = self._history_of.get(channel)
            if history is None:
                history = self._history_of[channel] = deque(maxlen=self.maxlen)
            if len(history) == self.maxlen:
                self._trimmed[channel] = history[0].key
            history.append(item)
            self._tops[channel] = key
            self._dispatch(channel, [item])
        return item.id

    def _top(self, channel: str) -> EventId:
        with self._lock:
            return self._tops.get(channel, ZERO)

    def _history(self, channel: str, after: EventId, limit: int) -> tuple[bool, list[Event]]:
        with self._lock:
            history = self._history_of.get(channel, ())
            trimmed = self._trimmed.get(channel)
            if trimmed is not None and after <= trimmed:
                found = False  # events after it were trimmed away
            elif after == ZERO:
                found = True  # before everything, and nothing was trimmed
            else:
                found = any(event.key == after for event in history)
            if not found:
                return False, []
            rows = [event for event in history if event.key > after]
            return True, rows[:limit]

    def _watch_channel(self, channel: str, top: EventId | None) -> EventId | None:
        return self._top(channel)

    def _cursor(self, channel: str, top: EventId | None) -> EventId | None:
        return self._top(channel)

    def _after_fork(self) -> None:
        super()._after_fork()
        self._lock = threading.RLock()


def broker_from_url(url: str, **options: Any) -> Broker:
    """A broker for ``url``: ``memory://``, ``redis://…``, ``rediss://…``, ``unix://…``.

    Lets an app pick its backend by configuration (an environment variable);
    ``options`` go to the broker (``maxlen``, ``queue_size``, ``prefix``…).
    """
    scheme = urlsplit(url).scheme
    if scheme == "memory":
        return MemoryBroker(**options)
    if scheme in ("redis", "rediss", "unix"):
        from .redis_broker import RedisBroker

        return RedisBroker(url, **options)
    raise ValueError(f"unknown broker URL {url!r}: use memory://, redis://, rediss:// "
                     f"or unix://")


def _after_fork_in_child() -> None:
    for broker in list(brokers):
        broker._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# -- The fan-out response -------------------------------------------------------



class FanOutApp:
    """The WSGI app of ``Broker.sse_app``."""

    def __init__(self, broker: Broker, channel: str | None, *, heartbeat: float | None,
                 probe_interval: float | None, retry: int | None) -> None:
        if channel is not None:
            check_channel(channel)
        for name, value in (("heartbeat", heartbeat), ("probe_interval", probe_interval)):
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))
                                      or not 0 < value <= threading.TIMEOUT_MAX):
                raise ValueError(f"{name} must be a number of seconds > 0, or None "
                                 f"(None disables), not {value!r}")
        if retry is not None:
            encode_event("", retry=retry)  # checked as on the wire
        self.broker = broker
        self.channel = channel
        self.heartbeat = heartbeat
        self.probe_interval = probe_interval
        self.retry = retry

    def __call__(self, environ: WSGIEnvironment,
                 start_response: StartResponse) -> Iterator[bytes] | list[bytes]:
        channel = self.channel or environ.get("live_wsgi.channel")
        if not channel:
            raise LookupError("sse_app() without a channel needs environ['live_wsgi.channel']")
        headers = [
            ("Content-Type", CONTENT_TYPE),
            ("Cache-Control", "no-cache"),
            ("X-Accel-Buffering", "no"),
        ]
        if self.broker._closing:
            # Tell the EventSource when to come back, never a non-200 (SPEC 2.4).
            start_response("200 OK", headers)
            return [f"retry: {self.retry or 5000}\n\n".encode()]
        sub = self.broker.subscribe(channel, last_event_id=last_event_id(environ),
                                    stream=None)
        start_response("200 OK", headers)
        return FanOutBody(sub, environ, heartbeat=self.heartbeat,
                          probe_interval=self.probe_interval, retry=self.retry)


class FanOutBody:
    """The body of a fan-out response: the server thread drains the subscription.

    Idle, it costs what an idle ``LiveBody`` costs (SPEC 4.2): the first time
    its wait for an event runs out (after ``probe_interval``, or the
    heartbeat if that comes first) it hands the client's socket to the
    process's watcher (``live_wsgi.watcher``), which closes the subscription
    the moment the client hangs up; the server thread then wakes only to
    send a heartbeat after ``heartbeat`` seconds of silence, or not at all.
    Where there is no watcher (waitress gives only a disconnect check; no
    ``epoll``) the server thread probes every ``probe_interval`` instead.
    """

    __slots__ = ("_environ", "_first", "_heartbeat", "_probe", "_probe_interval", "_silent",
                 "_sub", "_tick", "_waited", "_watch")

    def __init__(self, sub: Subscription, environ: WSGIEnvironment, *,
                 heartbeat: float | None, probe_interval: float | None,
                 retry: int | None) -> None:
        self._sub = sub
        self._environ = environ
        self._heartbeat = heartbeat
        self._probe_interval = probe_interval
        # How long a get() waits for an event: at first until the first look
        # at the client (or the first heartbeat); then see _idle().
        if probe_interval and not (heartbeat and heartbeat < probe_interval):
            self._tick: float | None = probe_interval
        else:
            self._tick = heartbeat
        self._waited = False
        self._probe: Callable[[], bool] | None = None
        self._watch: Watch | None = None
        self._silent = 0.0
        first = OPENING
        if retry is not None:
            first += f"retry: {retry}\n\n".encode()
        self._first: bytes | None = first

    def __iter__(self) -> FanOutBody:
        return self

    def __next__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            return first
        sub = self._sub
        while True:
            item = sub.get(self._tick)
            if isinstance(item, Event):
                self._silent = 0.0
                return encode_event(item.data, event=item.event, id=item.id)
            if isinstance(item, Reset):
                self._silent = 0.0
                return encode_event({"id": item.id}, event=RESET_EVENT, id=item.id)
            if sub.closed:  # shut down, or the watcher saw the client leave
                raise StopIteration
            beat = self._idle()
            if beat is not None:
                return beat

    def _idle(self) -> bytes | None:
        """A wait for an event ran out: look at the client, maybe send a heartbeat."""
        assert self._tick is not None
        self._silent += self._tick
        if not self._waited:
            self._waited = True
            self._watch_client()
        if self._probe is not None and self._probe():
            self._sub.close()
            raise StopIteration
        heartbeat = self._heartbeat
        beat = None
        if heartbeat is not None and self._silent >= heartbeat:
            self._silent = 0.0
            beat = HEARTBEAT
        if self._probe is None:
            # Nothing to ask on the server thread: wake only when a heartbeat is due.
            self._tick = None if heartbeat is None else heartbeat - self._silent
        return beat

    def _watch_client(self) -> None:
        """The body waits for the first time: have the watcher close the
        subscription when the client leaves, or else probe it every
        ``probe_interval`` from here."""
        if not self._probe_interval:
            return
        environ = self._environ
        raw = raw_client_socket(environ)
        if raw is not None:
            watching = watcher()
            if watching is not None:
                try:
                    self._watch = watching.on_hang_up(raw, self._sub, Subscription.close)
                    return
                except OSError:
                    pass  # closed under us (the probe says so), or no watcher thread
        self._probe = disconnect_probe(environ)

    def close(self) -> None:
        watch, self._watch = self._watch, None
        try:
            self._sub.close()
        finally:
            if watch is not None:
                # Before the server closes the socket (it calls close() first).
                watch.cancel()
