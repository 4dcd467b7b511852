"""Availability zones (``/os-availability-zone``).

A zone exists when a compute service's host is in it (hosts in no zoned
aggregate are in ``settings.default_availability_zone``).  A zone is available
when at least one of its compute services is enabled.  ``detail`` (admin) also
lists the ``internal`` zone of non-compute services and, per host, each service's
``available`` (up) and ``active`` (enabled) state.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from fastapi import APIRouter

from atoll.api import policy
from atoll.api.deps import ContextDep, RuntimeDep, isotime
from atoll.api.routers.services import (
    COMPUTE_BINARY,
    INTERNAL_ZONE,
    ServiceRecord,
    host_services,
    service_is_up,
)
from atoll.availability_zones import host_zones
from atoll.runtime import Runtime

router = APIRouter(tags=["os-availability-zone"])


def _by_zone(runtime: Runtime) -> dict[str, list[ServiceRecord]]:
    records, _down = host_services(runtime)
    zones = host_zones(runtime.settings.api_db, runtime.settings.default_availability_zone)
    grouped: dict[str, list[ServiceRecord]] = defaultdict(list)
    for record in records:
        svc = record.service
        zone = zones[svc.host] if svc.binary == COMPUTE_BINARY else INTERNAL_ZONE
        grouped[zone].append(record)
    return grouped


def _available(records: list[ServiceRecord]) -> bool:
    return any(not r.service.disabled for r in records)


@router.get("/os-availability-zone")
def list_zones(runtime: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    policy.authorize(ctx, "os_compute_api:os-availability-zone:list")
    grouped = _by_zone(runtime)
    info = [
        {"zoneName": zone, "zoneState": {"available": _available(records)}, "hosts": None}
        for zone, records in sorted(grouped.items())
        if zone != INTERNAL_ZONE
    ]
    info.sort(key=lambda z: (not z["zoneState"]["available"], z["zoneName"]))
    return {"availabilityZoneInfo": info}


@router.get("/os-availability-zone/detail")
def list_zones_detail(runtime: RuntimeDep, ctx: ContextDep) -> dict[str, Any]:
    policy.authorize(ctx, "os_compute_api:os-availability-zone:detail")
    grouped = _by_zone(runtime)
    info: list[dict[str, Any]] = []
    for zone, records in sorted(grouped.items()):
        if not _available(records):
            info.append({"zoneName": zone, "zoneState": {"available": False}, "hosts": None})
            continue
        hosts: dict[str, dict[str, Any]] = {}
        for record in records:
            svc = record.service
            hosts.setdefault(svc.host, {})[svc.binary] = {
                "available": service_is_up(svc, runtime.settings),
                "active": not svc.disabled,
                "updated_at": isotime(svc.last_seen_up or svc.updated_at),
            }
        info.append({"zoneName": zone, "zoneState": {"available": True}, "hosts": hosts})
    info.sort(key=lambda z: (not z["zoneState"]["available"], z["zoneName"]))
    return {"availabilityZoneInfo": info}
