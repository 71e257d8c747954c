"""The options of a live request, and their validation.

``LiveMiddleware`` checks its options once, in ``__init__``; a ``when``
predicate (or a framework's per-view options) may override some of them for
one request (``ROUTE_OPTIONS``). Bad values are refused with a message that
names the option and what it takes, never at the first request.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .context import Exclusions

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

SetupHook = Callable[["WSGIEnvironment"], object]
TeardownHook = Callable[["WSGIEnvironment", "BaseException | None"], object]
ErrorReporter = Callable[["WSGIEnvironment", BaseException], object]


@dataclasses.dataclass(frozen=True)
class Options:
    """What may differ per request (see ``LiveMiddleware``'s ``when``)."""

    queue_size: int | None
    queue_timeout: float
    commit_timeout: float | None
    write_timeout: float | None
    exclusions: Exclusions
    setup: SetupHook | None
    teardown: TeardownHook | None
    heartbeat: float | None


#: Keys a ``when`` predicate may return to override options for one request.
ROUTE_OPTIONS = frozenset(
    {"queue_size", "queue_timeout", "commit_timeout", "write_timeout",
     "excluded_keys", "setup", "teardown", "heartbeat"}
)  # fmt: skip

#: What ``None`` means, for the options that accept it.
_NONE_MEANS = {
    "commit_timeout": "no limit",
    "write_timeout": "no limit",
    "heartbeat": "None disables",
    "probe_interval": "None disables",
}


def seconds(name: str, value: object, *, optional: bool = False) -> float | None:
    """A duration in seconds: a finite number > 0 that a lock can wait for.

    ``threading.TIMEOUT_MAX`` is the longest wait a lock takes; a larger one
    (or infinity) would fail with ``OverflowError`` at every request, after
    its job was submitted. ``None`` is accepted when ``optional``.
    """
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or math.isnan(value)
        or not 0 < value <= threading.TIMEOUT_MAX
    ):
        hint = f"a number of seconds > 0 and <= {threading.TIMEOUT_MAX:g}"
        if optional:
            hint += f", or None ({_NONE_MEANS.get(name, 'no limit')})"
        raise ValueError(f"{name} must be {hint}, not {value!r}")
    return float(value)


def queue_size(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(
            f"queue_size must be an int >= 1 (writes waiting for a slow client), "
            f"or None for no bound, not {value!r}"
        )
    return value


def hook(name: str, value: object) -> Any:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be a callable or None, not {value!r}")
    return value


def check_route_options(values: Mapping[str, Any]) -> dict[str, Any]:
    """The checked form of per-route options (``ROUTE_OPTIONS``).

    Framework glue calls it where a route is declared (``@live(...)``,
    Bottle's ``live={...}``), so a bad option fails there, not as a 500 at
    the route's first request.
    """
    unknown = set(values) - ROUTE_OPTIONS
    if unknown:
        raise ValueError(
            f"unknown live option(s) {sorted(unknown)}; known: {sorted(ROUTE_OPTIONS)}"
        )
    checked: dict[str, Any] = {}
    for key, value in values.items():
        if key == "queue_size":
            checked[key] = queue_size(value)
        elif key == "queue_timeout":
            checked[key] = seconds(key, value)
        elif key in ("commit_timeout", "write_timeout", "heartbeat"):
            checked[key] = seconds(key, value, optional=True)
        elif key == "excluded_keys":
            checked["exclusions"] = Exclusions(value)
        else:
            checked[key] = hook(key, value)
    return checked


def make_options(base: Options | None, **values: Any) -> Options:
    """Checked options: ``values`` over ``base`` (all of them when no base)."""
    checked = check_route_options(values)
    if base is None:
        return Options(**checked)
    # replace() keeps the other fields as they are: the same hooks, the
    # same ContextVar objects (asdict() would deep-copy them).
    return dataclasses.replace(base, **checked)
