"""Host weighers: rank the hosts that passed the filters, best first.

Each weigher gives every candidate a raw weight; the raw weights are normalised
to [0, 1] over the candidates (all equal gives 0 to all), multiplied by the
weigher's multiplier and summed.  The highest total wins; equal totals are
ordered by host name so that the same inputs always give the same answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from operator import attrgetter
from typing import ClassVar

from atoll.config import Settings
from atoll.scheduler.host_state import HostState
from atoll.scheduler.request import SchedulingRequest

SOFT_AFFINITY_DEFAULT_MULTIPLIER = 1.0


class BaseWeigher:
    name: ClassVar[str] = "BaseWeigher"

    def multiplier(self, settings: Settings, request: SchedulingRequest) -> float:
        """0 skips the weigher for this request."""
        raise NotImplementedError

    def raw_weights(
        self, hosts: Sequence[HostState], request: SchedulingRequest, settings: Settings
    ) -> list[float]:
        raise NotImplementedError


class SpreadWeigher(BaseWeigher):
    """More free memory is better: new servers spread over the hosts."""

    name = "SpreadWeigher"

    def multiplier(self, settings: Settings, request: SchedulingRequest) -> float:
        return settings.scheduler.spread_weight_multiplier

    def raw_weights(
        self, hosts: Sequence[HostState], request: SchedulingRequest, settings: Settings
    ) -> list[float]:
        return [float(h.room.free.get("MEMORY_MB", 0)) if h.room else 0.0 for h in hosts]


class HostWeightWeigher(BaseWeigher):
    """An operator-set weight per host name (``scheduler.host_weights``)."""

    name = "HostWeightWeigher"

    def multiplier(self, settings: Settings, request: SchedulingRequest) -> float:
        if not settings.scheduler.host_weights:
            return 0.0
        return settings.scheduler.host_weight_multiplier

    def raw_weights(
        self, hosts: Sequence[HostState], request: SchedulingRequest, settings: Settings
    ) -> list[float]:
        weights = settings.scheduler.host_weights
        return [float(weights.get(h.host, 0.0)) for h in hosts]


class CrossCellWeigher(BaseWeigher):
    """For a move, hosts in the source cell weigh 1, others 0.

    A large positive multiplier keeps moves in their cell when it has room; a
    negative one drains the cell.
    """

    name = "CrossCellWeigher"

    def multiplier(self, settings: Settings, request: SchedulingRequest) -> float:
        if request.source_cell is None:
            return 0.0
        return settings.scheduler.cross_cell_weight_multiplier

    def raw_weights(
        self, hosts: Sequence[HostState], request: SchedulingRequest, settings: Settings
    ) -> list[float]:
        source = request.source_cell
        return [1.0 if h.cell.name == source or h.cell.uuid == source else 0.0 for h in hosts]


class ServerGroupSoftAffinityWeigher(BaseWeigher):
    """A ``soft-affinity`` group prefers hosts already running a member."""

    name = "ServerGroupSoftAffinityWeigher"

    def multiplier(self, settings: Settings, request: SchedulingRequest) -> float:
        if request.group_policy != "soft-affinity":
            return 0.0
        return float(
            getattr(
                settings.scheduler,
                "soft_affinity_weight_multiplier",
                SOFT_AFFINITY_DEFAULT_MULTIPLIER,
            )
        )

    def raw_weights(
        self, hosts: Sequence[HostState], request: SchedulingRequest, settings: Settings
    ) -> list[float]:
        members = request.group_hosts
        return [1.0 if h.host in members else 0.0 for h in hosts]


class ServerGroupSoftAntiAffinityWeigher(BaseWeigher):
    """A ``soft-anti-affinity`` group prefers hosts running no member."""

    name = "ServerGroupSoftAntiAffinityWeigher"

    def multiplier(self, settings: Settings, request: SchedulingRequest) -> float:
        if request.group_policy != "soft-anti-affinity":
            return 0.0
        return float(
            getattr(
                settings.scheduler,
                "soft_anti_affinity_weight_multiplier",
                SOFT_AFFINITY_DEFAULT_MULTIPLIER,
            )
        )

    def raw_weights(
        self, hosts: Sequence[HostState], request: SchedulingRequest, settings: Settings
    ) -> list[float]:
        members = request.group_hosts
        return [0.0 if h.host in members else 1.0 for h in hosts]


DEFAULT_WEIGHERS: Sequence[BaseWeigher] = (
    SpreadWeigher(),
    HostWeightWeigher(),
    CrossCellWeigher(),
    ServerGroupSoftAffinityWeigher(),
    ServerGroupSoftAntiAffinityWeigher(),
)


def normalize(raw: Sequence[float]) -> list[float]:
    """Scale to [0, 1] over the list; all-equal (or empty) gives zeros."""
    if not raw:
        return []
    low, high = min(raw), max(raw)
    if high == low:
        return [0.0] * len(raw)
    span = high - low
    return [(w - low) / span for w in raw]


def weigh(
    hosts: Sequence[HostState],
    request: SchedulingRequest,
    settings: Settings,
    weighers: Sequence[BaseWeigher] = DEFAULT_WEIGHERS,
) -> list[tuple[float, HostState]]:
    """The hosts with their total weight, best first (ties by host name, then node)."""
    # by name first, then a stable sort by weight: equal weights keep name order
    hosts = sorted(hosts, key=_NAME_KEY)
    totals = [0.0] * len(hosts)
    for weigher in weighers:
        multiplier = weigher.multiplier(settings, request)
        if not multiplier:
            continue
        for i, w in enumerate(normalize(weigher.raw_weights(hosts, request, settings))):
            if w:
                totals[i] += multiplier * w
    order = sorted(range(len(hosts)), key=totals.__getitem__, reverse=True)
    return [(totals[i], hosts[i]) for i in order]


_NAME_KEY = attrgetter("host", "node")
