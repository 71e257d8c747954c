"""One watcher per process for the client sockets of idle live bodies.

An idle body (a producer waiting for news) sends nothing, so only the kernel
can tell that its client left (SPEC 4.2). Rather than every idle body's
server thread waking each ``probe_interval`` to ask, a body that goes idle
hands its raw client socket to this watcher once, and then its server thread
sleeps until the next heartbeat is due (or until the producer writes). The
watcher waits in one ``epoll`` for the client's FIN or reset on any of them
and aborts that body's channel: the producer's ``stream.wait`` and the
server thread both wake at once, and the body ends as for any disconnect.

design: one ``epoll`` set and one daemon thread (``live_wsgi-watcher``), made
on first use, running while something is watched and gone when nothing is.
Each socket is registered for ``EPOLLRDHUP`` (the peer's FIN; ``EPOLLHUP``
and ``EPOLLERR`` are always reported) and never for ``EPOLLIN``: bytes the
client sent ahead (a pipelined request, any TLS record) would wake the
watcher without end, and are no disconnect. ``EPOLLONESHOT``: a socket
reports its hang-up once, so a half-closed socket left registered until its
body closes cannot make the watcher spin. A body stays registered from its
first idle wait until its ``close()``, which the server calls before it
closes the connection (a socket the server closed first simply left the
set; its number may already belong to another body, which the map tells).
The watcher holds a body's channel weakly: it keeps no request alive.
A fan-out body (``live_wsgi.broadcast``) has no channel but a subscription:
``on_hang_up`` watches a socket for any target, held weakly too, and calls
what ending it takes (there, closing the subscription).

Under gevent's monkey-patching it is a greenlet instead, which waits for the
epoll descriptor to turn readable through gevent's hub: no OS thread ever
touches gevent's locks, and the hub runs the other greenlets meanwhile.
After ``fork`` the child makes a set of its own (``os.register_at_fork``):
the inherited descriptor is the parent's very set. Without ``epoll`` (not
Linux) there is no watcher, and idle bodies probe every ``probe_interval``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sys
import threading
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import ClientDisconnected
from .probe import unpatched

if TYPE_CHECKING:
    import _socket
    from collections.abc import Callable

    from .channel import Channel

_T = TypeVar("_T")

log = logging.getLogger("live_wsgi")

#: What a watched socket reports: the peer's FIN (EPOLLHUP and EPOLLERR, a
#: reset, come always), once per registration.
EVENTS: int = getattr(select, "EPOLLRDHUP", 0) | getattr(select, "EPOLLONESHOT", 0)


class Watch:
    """One body's registration: ``hung_up`` turns True when its client left."""

    __slots__ = ("_hang_up", "_target", "_watcher", "fd", "hung_up")

    def __init__(self, watcher: Watcher, fd: int, target: _T,
                 hang_up: Callable[[_T], object]) -> None:
        self._watcher = watcher
        self.fd = fd
        self._target = weakref.ref(target)
        self._hang_up: Callable[[Any], object] = hang_up
        #: Set (on the watcher's thread) before the target is told.
        self.hung_up = False

    def cancel(self) -> None:
        """Stop watching; call it before the socket is closed. Idempotent."""
        self._watcher.unwatch(self)

    def fire(self) -> None:
        target = self._target()
        if target is None:
            return  # its request is over and gone
        self.hung_up = True
        self._hang_up(target)


def _abort(channel: Channel) -> None:
    channel.abort(ClientDisconnected, "the client disconnected")


class Watcher:
    """Ends the body of each watched socket whose client leaves (aborts its channel)."""

    def __init__(self) -> None:
        # Guards _watches and _running; the epoll set itself is thread-safe.
        self._lock = threading.Lock()
        self._epoll: select.epoll = unpatched("epoll")()
        # Rung when the last watch goes, so the thread can leave.
        self._bell = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._epoll.register(self._bell, select.EPOLLIN)
        self._watches: dict[int, Watch] = {}
        self._running = False
        self._closed = False
        # Under gevent: its wait for a readable descriptor, and its spawn.
        self._gevent = _gevent()
        #: How many times the watcher woke up (the tests count them).
        self.wakeups = 0

    def watch(self, sock: _socket.socket, channel: Channel) -> Watch:
        """Abort ``channel`` once ``sock``'s peer hangs up, until ``unwatch``.

        :raises OSError: ``sock`` is closed, or no thread can be started.
        """
        return self.on_hang_up(sock, channel, _abort)

    def on_hang_up(self, sock: _socket.socket, target: _T,
                   hang_up: Callable[[_T], object]) -> Watch:
        """Call ``hang_up(target)`` on the watcher's thread once ``sock``'s peer
        hangs up, until ``unwatch``. ``target`` is held weakly: gone, nobody is
        told. ``hang_up`` must not block: every other watched socket waits.

        :raises OSError: ``sock`` is closed, or no thread can be started.
        """
        fd = sock.fileno()
        if fd < 0:
            raise OSError("the socket is closed")
        watch = Watch(self, fd, target, hang_up)
        with self._lock:
            # In the map first: a socket whose client left already reports at
            # once, on the watcher's thread, which must find it there (the
            # report is one-shot).
            self._watches[fd] = watch
            try:
                try:
                    self._epoll.register(fd, EVENTS)
                except FileExistsError:  # still there from an earlier body on this connection
                    self._epoll.modify(fd, EVENTS)
            except BaseException:
                del self._watches[fd]
                raise
            if not self._running:
                try:
                    self._start()
                except RuntimeError as exc:  # can't start new thread: the body probes
                    del self._watches[fd]
                    self._epoll.unregister(fd)
                    raise OSError(f"no watcher thread: {exc}") from exc
                self._running = True
        return watch

    def _start(self) -> None:
        if self._gevent is None:
            threading.Thread(target=self._run, name="live_wsgi-watcher", daemon=True).start()
        else:
            self._gevent.spawn(self._run)

    def unwatch(self, watch: Watch) -> None:
        with self._lock:
            if self._watches.get(watch.fd) is not watch:
                return  # done already, or its socket was closed and the number reused
            del self._watches[watch.fd]
            # EBADF, ENOENT: the server closed the socket first, which took
            # it out of the set (its number may be another's by now).
            with contextlib.suppress(OSError):
                self._epoll.unregister(watch.fd)
            if not self._watches:
                os.eventfd_write(self._bell, 1)  # the thread may leave

    def _run(self) -> None:
        epoll = self._epoll
        wait_read = None if self._gevent is None else self._gevent.socket.wait_read
        try:
            while True:
                if wait_read is None:
                    events = epoll.poll()
                else:
                    wait_read(epoll.fileno())  # other greenlets run meanwhile
                    events = epoll.poll(0)
                self.wakeups += 1
                for fd, _ in events:
                    if fd == self._bell:
                        with contextlib.suppress(BlockingIOError):
                            os.eventfd_read(self._bell)
                        continue
                    watch = self._watches.get(fd)
                    # Asked again: the event may be that of a socket that was
                    # closed since, and its number given to another client.
                    if watch is not None and _hung_up(fd):
                        try:
                            watch.fire()
                        except Exception:  # a waker of the target's; the watcher goes on
                            log.exception("live_wsgi: error while ending a stream whose "
                                          "client left")
                with self._lock:
                    if not self._watches:
                        self._running = False
                        return
        except BaseException as exc:
            if self._closed:
                return  # a greenlet that outlived a fork, its set closed under it
            with self._lock:
                self._running = False  # the next watch() starts a new thread
            if not isinstance(exc, Exception):
                raise
            log.exception("live_wsgi: the disconnect watcher failed")

    def close(self) -> None:
        """Drop this process's copies of the descriptors (in a forked child).

        A thread does not outlive a fork, but a greenlet does: waiting on the
        closed set, it wakes and leaves quietly.
        """
        self._closed = True
        self._epoll.close()
        os.close(self._bell)


def _hung_up(fd: int) -> bool:
    """Has the peer of ``fd`` hung up (or is ``fd`` closed), right now?"""
    poller = unpatched("poll")()
    poller.register(fd, _POLLRDHUP)  # POLLHUP, POLLERR, POLLNVAL come always
    return bool(poller.poll(0))


_POLLRDHUP: int = getattr(select, "POLLRDHUP", 0)


def _gevent() -> Any:
    """The ``gevent`` module where threads are greenlets (monkey-patched), else None."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("threading"):
        return None
    import gevent.socket

    return gevent


#: Where the OS tells a peer's FIN apart from readable bytes.
AVAILABLE = bool(EVENTS & getattr(select, "EPOLLRDHUP", 0)) and hasattr(os, "eventfd")

_watcher: Watcher | None = None
_lock = threading.Lock()


def watcher() -> Watcher | None:
    """This process's watcher, made on first use; None where there can be none."""
    global _watcher
    if _watcher is None and AVAILABLE:
        with _lock:
            if _watcher is None:
                try:
                    _watcher = Watcher()
                except OSError:  # out of descriptors: the bodies probe instead
                    log.warning("live_wsgi: no disconnect watcher", exc_info=True)
                    return None
    return _watcher


def _after_fork_in_child() -> None:
    # The child has none of the parent's threads, and the inherited epoll
    # descriptor is the parent's very set: start afresh, with a lock nobody
    # can be holding.
    global _watcher, _lock
    inherited, _watcher, _lock = _watcher, None, threading.Lock()
    if inherited is not None:
        inherited.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
