"""Named fault points: operators and tests make atoll fail on purpose.

Code declares a point once, at import time, and calls :func:`hit` where the
fault may happen::

    SPAWN = faults.register("virt.sim.spawn", "before the simulated hypervisor spawns a guest")
    ...
    faults.hit(SPAWN, host=self.host, instance=uuid)

Faults are switched on by name, from the ``faults`` setting, the admin API
(``PUT /v2.1/atoll-admin/faults``) or a test, never by monkey-patching:
``configure({point_or_glob: action})`` replaces the active set,
``set_fault(name, action)`` changes one entry.  A key is a registered point
name or an :mod:`fnmatch` pattern matching at least one registered point (``"virt.sim.*"``).

Action syntax: ``<action>[<modifier>][;key=value ...]``

``raise``
    raise :class:`atoll.exceptions.InjectedFault`.
``raise:<ErrorClassName>`` / ``raise:<ErrorClassName>:<message>``
    raise that class from :mod:`atoll.exceptions`; ``HypervisorUnavailable``
    is given the ``host`` of the hit's context.
``hang:<seconds>``
    sleep that long, then carry on (to exceed a timeout).  A point that has a
    timeout of its own (a conductor step: ``timeouts.workflow_step``) is
    abandoned when the hang outlasts it: it sleeps the timeout, then raises
    :class:`atoll.exceptions.StepTimeout`.
``kill``
    kill this process at once with SIGKILL: a real crash, no clean-up.
``drop_reply`` / ``duplicate_reply``
    :func:`hit` returns a :class:`FaultOutcome` of that kind (and keeps it for
    :func:`take_outcome` on this thread): the work is done, then its answer is
    lost or given twice.  The RPC server drops or doubles its reply; a conductor
    step loses its result (the step fails after taking effect) or runs twice.

Modifiers (at most one): ``@N`` fires only on the Nth matching hit (1-based),
``*N`` fires on the first N matching hits.  Hits are counted per process, per
entry and point, and the counts restart on :func:`configure` (or when
:func:`set_fault` changes the entry).

Filters: ``;key=value`` makes the entry apply only to hits whose context has
that value, e.g. ``raise:HypervisorUnavailable*1;host=host1``.  A hit that does
not pass the filters is not counted.

When several entries match a point, the exact name wins over patterns, then
patterns apply in the order they were configured; the first entry whose
filters pass is the one used.  Every fault that fires is logged as a WARNING.
A message may not contain ``;`` nor end in ``@N`` or ``*N``.
"""

from __future__ import annotations

import fnmatch
import logging
import math
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field

from atoll import exceptions

LOG = logging.getLogger(__name__)

ACTIONS = ("raise", "hang", "kill", "drop_reply", "duplicate_reply")

_MODIFIER = re.compile(r"([@*])(\d+)$")
_FILTER = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class FaultPoint:
    name: str
    description: str


@dataclass(frozen=True)
class FaultOutcome:
    """What :func:`hit` tells its caller to do (only for reply faults)."""

    kind: str  # "drop_reply" | "duplicate_reply"
    point: str
    action: str


@dataclass(frozen=True)
class _Rule:
    text: str
    kind: str
    error: type[Exception] | None = None
    message: str | None = None
    seconds: float = 0.0
    nth: int | None = None
    first: int | None = None
    filters: dict[str, str] = field(default_factory=dict)

    def passes(self, context: dict[str, object]) -> bool:
        return all(
            key in context and str(context[key]) == value for key, value in self.filters.items()
        )

    def fires_on(self, count: int) -> bool:
        if self.nth is not None:
            return count == self.nth
        if self.first is not None:
            return count <= self.first
        return True


_lock = threading.Lock()
_thread = threading.local()
_points: dict[str, FaultPoint] = {}
_active: dict[str, _Rule] = {}
_counts: dict[tuple[str, str], int] = {}


def register(name: str, description: str) -> str:
    """Declare a fault point; returns ``name``.  Re-registering the same point is fine."""
    if not name or any(ch.isspace() for ch in name):
        raise ValueError(f"invalid fault point name {name!r}")
    with _lock:
        known = _points.get(name)
        if known is not None and known.description != description:
            raise ValueError(f"fault point {name!r} is already registered as {known.description!r}")
        _points[name] = FaultPoint(name, description)
    return name


def registered() -> list[FaultPoint]:
    """Every registered point, sorted by name."""
    with _lock:
        return sorted(_points.values(), key=lambda p: p.name)


def validate_action(action: str) -> None:
    """Raise ValueError if ``action`` is not valid action syntax."""
    _parse(action)


def configure(spec: dict[str, str] | None) -> None:
    """Replace the active faults with ``spec`` ({point name or glob: action})."""
    spec = dict(spec or {})
    with _lock:
        rules = {name: _parse_for(name, action) for name, action in spec.items()}
        _active.clear()
        _active.update(rules)
        _counts.clear()


def set_fault(name: str, action: str | None) -> None:
    """Add, replace (action) or remove (None) one active fault."""
    with _lock:
        if action is None:
            _active.pop(name, None)
        else:
            _active[name] = _parse_for(name, action)
        for key in [key for key in _counts if key[0] == name]:
            del _counts[key]


def active() -> dict[str, str]:
    """The active faults as configured: {point name or glob: action}."""
    with _lock:
        return {name: rule.text for name, rule in _active.items()}


def take_outcome() -> FaultOutcome | None:
    """The reply fault the last :func:`hit` on this thread returned, once."""
    outcome = getattr(_thread, "outcome", None)
    _thread.outcome = None
    return outcome


def hit(name: str, *, timeout: float | None = None, **context: object) -> FaultOutcome | None:
    """Pass fault point ``name``: act on its active fault, if any.

    Raises, sleeps or kills the process as configured; returns a
    :class:`FaultOutcome` for reply faults, and None otherwise.  ``timeout``:
    how long the code at this point may take before it is abandoned.
    """
    if not _active:  # the common case: no lock, no work
        return None
    with _lock:
        chosen: tuple[str, _Rule] | None = None
        candidates = [(name, _active[name])] if name in _active else []
        candidates += [
            (key, rule)
            for key, rule in _active.items()
            if key != name and fnmatch.fnmatchcase(name, key)
        ]
        for key, rule in candidates:
            if rule.passes(context):
                chosen = key, rule
                break
        if chosen is None:
            return None
        key, rule = chosen
        count = _counts.get((key, name), 0) + 1
        _counts[(key, name)] = count
        if not rule.fires_on(count):
            return None
    outcome = _fire(name, rule, count, context, timeout)
    _thread.outcome = outcome
    return outcome


def _fire(
    name: str, rule: _Rule, count: int, context: dict[str, object], timeout: float | None
) -> FaultOutcome | None:
    details = "".join(f", {key}={value}" for key, value in sorted(context.items()))
    LOG.warning("fault point %s fired: %s (hit %d%s)", name, rule.text, count, details)
    if rule.kind == "raise":
        assert rule.error is not None
        if issubclass(rule.error, exceptions.HypervisorUnavailable):
            raise rule.error(rule.message, host=str(context.get("host", "")))
        if rule.error is exceptions.InjectedFault and rule.message is None:
            raise exceptions.InjectedFault(f"Injected fault at fault point {name}")
        raise rule.error(rule.message)
    if rule.kind == "hang":
        if timeout is not None and rule.seconds > timeout:
            time.sleep(timeout)
            raise exceptions.StepTimeout(
                f"{name} did not finish within its {timeout:g}s timeout (timeouts.workflow_step)"
            )
        time.sleep(rule.seconds)
        return None
    if rule.kind == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    return FaultOutcome(kind=rule.kind, point=name, action=rule.text)


def _parse_for(name: str, action: str) -> _Rule:
    """Check that ``name`` is a registered point or a glob matching one (caller holds _lock)."""
    is_glob = any(ch in name for ch in "*?[")
    if name not in _points and not (
        is_glob and any(fnmatch.fnmatchcase(point, name) for point in _points)
    ):
        known = ", ".join(sorted(_points)) or "(none registered)"
        raise ValueError(f"unknown fault point {name!r}; known points: {known}")
    try:
        return _parse(action)
    except ValueError as exc:
        raise ValueError(f"fault point {name!r}: {exc}") from None


def _parse(action: str) -> _Rule:
    if not isinstance(action, str) or not action.strip():
        raise ValueError(f"empty fault action {action!r}")
    text = action.strip()
    segments = [segment.strip() for segment in text.split(";")]
    nth = first = None
    for i, segment in enumerate(segments):
        match = _MODIFIER.search(segment)
        if match is None:
            continue
        if nth is not None or first is not None:
            raise ValueError(f"fault action {text!r} has more than one @N/*N modifier")
        number = int(match.group(2))
        if number < 1:
            raise ValueError(f"fault action {text!r}: the count must be at least 1")
        if match.group(1) == "@":
            nth = number
        else:
            first = number
        segments[i] = segment[: match.start()]

    filters: dict[str, str] = {}
    for segment in segments[1:]:
        match = _FILTER.match(segment)
        if match is None:
            raise ValueError(f"fault action {text!r}: filter {segment!r} is not key=value")
        filters[match.group(1)] = match.group(2)

    kind, _, rest = segments[0].partition(":")
    common = {"text": text, "nth": nth, "first": first, "filters": filters}
    if kind == "raise":
        class_name, _, message = rest.partition(":")
        error = getattr(exceptions, class_name or "InjectedFault", None)
        if not (isinstance(error, type) and issubclass(error, Exception)):
            raise ValueError(
                f"fault action {text!r}: {class_name!r} is not an error class in atoll.exceptions"
            )
        return _Rule(kind=kind, error=error, message=message or None, **common)
    if kind == "hang":
        try:
            seconds = float(rest)
        except ValueError:
            raise ValueError(f"fault action {text!r}: use hang:<seconds>") from None
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError(f"fault action {text!r}: seconds must be a finite number >= 0")
        return _Rule(kind=kind, seconds=seconds, **common)
    if kind in ("kill", "drop_reply", "duplicate_reply"):
        if rest:
            raise ValueError(f"fault action {text!r}: {kind} takes no argument")
        return _Rule(kind=kind, **common)
    raise ValueError(f"unknown fault action {text!r}; actions: {', '.join(ACTIONS)}")
