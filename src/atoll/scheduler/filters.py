"""Host filters: each keeps or drops one host for one request.

A filter is a class with a ``name`` (the one logs and NoValidHost messages use),
``applies(request)`` (False skips it entirely for this request, so the common
case pays only for the filters that can matter) and ``host_passes(host,
request)``, a pure function of its two arguments.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import ClassVar

from atoll.scheduler.host_state import HostState
from atoll.scheduler.request import SchedulingRequest

LOG = logging.getLogger(__name__)

# Hints some filter here understands; any other hint is accepted and ignored.
KNOWN_HINTS = frozenset({"group"})


class BaseFilter:
    name: ClassVar[str] = "BaseFilter"

    def applies(self, request: SchedulingRequest) -> bool:
        return True

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        raise NotImplementedError

    def filter_all(self, hosts: list[HostState], request: SchedulingRequest) -> list[HostState]:
        passes = self.host_passes
        return [h for h in hosts if passes(h, request)]

    def __repr__(self) -> str:
        return self.name


class RequestedDestinationFilter(BaseFilter):
    """Only the requested host and/or cell (a cold migrate or resize with a target)."""

    name = "RequestedDestinationFilter"

    def applies(self, request: SchedulingRequest) -> bool:
        return bool(request.requested_host or request.requested_cell)

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        if request.requested_host and request.requested_host not in (host.host, host.node):
            return False
        return not request.requested_cell or request.requested_cell in (
            host.cell.name,
            host.cell.uuid,
        )


class CrossCellFilter(BaseFilter):
    """When policy keeps the caller in its cell, only hosts of the move's source cell."""

    name = "CrossCellFilter"

    def applies(self, request: SchedulingRequest) -> bool:
        return not request.allow_cross_cell and request.source_cell is not None

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        return request.source_cell in (host.cell.name, host.cell.uuid)


class IgnoreHostsFilter(BaseFilter):
    """Not the hosts the request rules out (a migrate's source host, failed hosts)."""

    name = "IgnoreHostsFilter"

    def applies(self, request: SchedulingRequest) -> bool:
        return bool(request.ignore_hosts)

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        return host.host not in request.ignore_hosts


class ComputeFilter(BaseFilter):
    """Only hosts whose compute service is up, enabled and not forced down."""

    name = "ComputeFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        return host.is_up and not host.service_disabled and not host.forced_down


class AvailabilityZoneFilter(BaseFilter):
    """Only hosts in the requested availability zone."""

    name = "AvailabilityZoneFilter"

    def applies(self, request: SchedulingRequest) -> bool:
        return bool(request.availability_zone)

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        return host.availability_zone == request.availability_zone


class ServerGroupAntiAffinityFilter(BaseFilter):
    """An ``anti-affinity`` group: no host that already runs a member (in any cell)."""

    name = "ServerGroupAntiAffinityFilter"

    def applies(self, request: SchedulingRequest) -> bool:
        return request.group_policy == "anti-affinity"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        return host.host not in request.group_hosts


class ServerGroupAffinityFilter(BaseFilter):
    """An ``affinity`` group: the members' host, once there is one."""

    name = "ServerGroupAffinityFilter"

    def applies(self, request: SchedulingRequest) -> bool:
        return request.group_policy == "affinity" and bool(request.group_hosts)

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        return host.host in request.group_hosts


class ResourceFilter(BaseFilter):
    """Only hosts whose placement provider has free capacity for the flavor."""

    name = "ResourceFilter"

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        return host.fits(request.resources())

    def filter_all(self, hosts: list[HostState], request: SchedulingRequest) -> list[HostState]:
        wanted = tuple(request.resources().items())  # once, not per host
        kept: list[HostState] = []
        keep = kept.append
        debug = LOG.isEnabledFor(logging.DEBUG)
        for h in hosts:
            room = h.room
            if room is not None and room.fits(wanted):
                keep(h)
            elif debug:
                if room is None:
                    LOG.debug("%s has no resource provider %s", h.host, h.provider_uuid)
                else:
                    LOG.debug("%s", room.provider.refusal(dict(wanted)))
        return kept


class SchedulerHintsFilter(BaseFilter):
    """Hints no filter understands: accepted and ignored (logged once per request)."""

    name = "SchedulerHintsFilter"

    def applies(self, request: SchedulingRequest) -> bool:
        unknown = sorted(set(request.scheduler_hints) - KNOWN_HINTS)
        if unknown:
            LOG.debug("Ignoring scheduler hints no filter handles: %s", ", ".join(unknown))
        return False

    def host_passes(self, host: HostState, request: SchedulingRequest) -> bool:
        return True


# Cheapest and most selective first; the order also decides which filter a
# NoValidHost message names when several would have emptied the list.
DEFAULT_FILTERS: Sequence[BaseFilter] = (
    RequestedDestinationFilter(),
    CrossCellFilter(),
    IgnoreHostsFilter(),
    ComputeFilter(),
    AvailabilityZoneFilter(),
    ServerGroupAntiAffinityFilter(),
    ServerGroupAffinityFilter(),
    ResourceFilter(),
    SchedulerHintsFilter(),
)
