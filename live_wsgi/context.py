"""Execution state that follows a request from the server thread into the worker.

Two kinds of state exist in Python apps:

- ``contextvars`` (tracing spans, Sentry scopes, structlog's bound context,
  Flask's context variables). They are copied whole with
  ``contextvars.copy_context()`` on the server thread; the worker runs the
  job inside that copy, and each job gets its own copy, so one ``Context``
  is never entered from two threads.
- ``threading.local`` objects (SQLAlchemy ``scoped_session`` registries,
  Bottle's request, home-made request globals). They cannot be enumerated,
  so they are registered with :func:`share_local`; their attributes are
  copied (shallow) into the worker before the job and taken away after it.

Both copies are shallow: the worker sees the *same objects* the server thread
had. Rebinding a variable or an attribute on the worker does not flow back
to the server thread; mutating a shared object does, as with any object two
threads hold.

``excluded_keys`` names state that must *not* follow: a context variable
(by ``ContextVar.name`` or the object itself) or a registered local (by the
name given to ``share_local``). The worker sees its default instead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from contextvars import Context, ContextVar, copy_context
from typing import Any, TypeVar

T = TypeVar("T")

_registry_lock = threading.Lock()
_shared_locals: dict[str, threading.local] = {}

ExcludedKeys = Iterable["str | ContextVar[Any]"]


def share_local(obj: threading.local, name: str) -> threading.local:
    """Let the attributes of ``obj`` follow each live request into its worker.

    ``name`` is what ``excluded_keys`` uses to keep it behind. Registering
    the same object under the same name again is harmless; another object
    under a taken name is an error. Returns ``obj``.
    """
    if not isinstance(obj, threading.local):
        raise TypeError(
            f"share_local() takes a threading.local instance, not {type(obj).__name__}; "
            "context variables follow the request without registration"
        )
    if not isinstance(name, str) or not name:
        raise ValueError(f"share_local() needs a non-empty str name, not {name!r}")
    with _registry_lock:
        known = _shared_locals.get(name)
        if known is not None and known is not obj:
            raise ValueError(
                f"share_local(): the name {name!r} is already registered for "
                "another object; pick a different name or unshare_local() it first"
            )
        _shared_locals[name] = obj
    return obj


def unshare_local(name: str) -> None:
    """Stop copying the local registered as ``name`` (no error if unknown)."""
    with _registry_lock:
        _shared_locals.pop(name, None)


class Exclusions:
    """The parsed form of ``excluded_keys``."""

    __slots__ = ("names", "variables")

    def __init__(self, keys: ExcludedKeys = ()) -> None:
        if isinstance(keys, (str, ContextVar)):
            raise TypeError(
                "excluded_keys must be a list of names or ContextVar objects, "
                f"not a single {type(keys).__name__}: write [{keys!r}]"
            )
        names: set[str] = set()
        variables: set[ContextVar[Any]] = set()
        for key in keys:
            if isinstance(key, str):
                names.add(key)
            elif isinstance(key, ContextVar):
                variables.add(key)
            else:
                raise TypeError(
                    "excluded_keys items must be str names or ContextVar "
                    f"objects, not {type(key).__name__}"
                )
        self.names = frozenset(names)
        self.variables = frozenset(variables)

    def __bool__(self) -> bool:
        return bool(self.names or self.variables)

    def excludes(self, var: ContextVar[Any]) -> bool:
        return var in self.variables or var.name in self.names


NO_EXCLUSIONS = Exclusions()


class Snapshot:
    """Execution state captured on the server thread, to run a job in."""

    __slots__ = ("_context", "_locals")

    def __init__(
        self,
        context: Context,
        local_values: Sequence[tuple[threading.local, dict[str, Any]]],
    ) -> None:
        self._context = context
        self._locals = local_values

    @classmethod
    def capture(cls, exclusions: Exclusions = NO_EXCLUSIONS) -> Snapshot:
        """Copy this thread's state, minus ``exclusions``. Call it on S."""
        context = copy_context()
        if exclusions.variables or exclusions.names:
            excluded = [var for var in context if exclusions.excludes(var)]
            if excluded:
                # A Context cannot forget a variable, so build a new one that
                # never had the excluded ones: they read as their defaults.
                kept = [(var, value) for var, value in context.items()
                        if var not in excluded]  # fmt: skip
                context = Context()
                context.run(_set_all, kept)
        if not _shared_locals:
            return cls(context, ())
        local_values: list[tuple[threading.local, dict[str, Any]]] = []
        if _shared_locals:
            with _registry_lock:
                shared = list(_shared_locals.items())
            for name, obj in shared:
                if name in exclusions.names:
                    local_values.append((obj, {}))
                else:
                    local_values.append((obj, dict(obj.__dict__)))
        return cls(context, local_values)

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` on this (worker) thread inside the captured state.

        Afterwards the thread keeps nothing: the Context was this job's own,
        and every registered local is put back as this thread had it.
        """
        if not self._locals:
            return self._context.run(fn, *args)
        restore = []
        for obj, values in self._locals:
            mine = obj.__dict__
            restore.append((mine, dict(mine)))
            mine.update(values)
        try:
            return self._context.run(fn, *args)
        finally:
            for mine, before in restore:
                mine.clear()
                mine.update(before)


def capture(exclusions: Exclusions = NO_EXCLUSIONS) -> Snapshot | Context:
    """``Snapshot.capture``, or the copied ``Context`` itself when no local is
    registered (both ``run(fn, *args)``): one object less per request."""
    if not _shared_locals and not (exclusions.names or exclusions.variables):
        return copy_context()
    return Snapshot.capture(exclusions)


def _set_all(pairs: list[tuple[ContextVar[Any], Any]]) -> None:
    for var, value in pairs:
        var.set(value)
