"""Power states of a guest, with Nova's values (shown as ``OS-EXT-STS:power_state``)."""

from __future__ import annotations

NOSTATE = 0
RUNNING = 1
PAUSED = 3
SHUTDOWN = 4
CRASHED = 6
SUSPENDED = 7

STATE_MAP: dict[int, str] = {
    NOSTATE: "pending",
    RUNNING: "running",
    PAUSED: "paused",
    SHUTDOWN: "shutdown",
    CRASHED: "crashed",
    SUSPENDED: "suspended",
}

ALL_STATES = tuple(STATE_MAP)


def name(state: int) -> str:
    """The readable name of ``state`` ("unknown(<n>)" for a value atoll does not know)."""
    return STATE_MAP.get(state, f"unknown({state})")
