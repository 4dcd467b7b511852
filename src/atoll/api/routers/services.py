"""Compute services (``/os-services``): admin only, read from every cell's ``services``.

- ``GET /os-services?host=&binary=``: ``id`` is the row id before 2.53 and the
  service uuid from 2.53; ``forced_down`` from 2.11.  From 2.69 the compute
  hosts of a cell whose database does not answer are listed as
  ``{"binary", "host", "status": "UNKNOWN"}``; before that they are left out.
- ``PUT /os-services/{uuid}`` (2.53+): ``status``, ``disabled_reason``, ``forced_down``.
- ``PUT /os-services/enable|disable|disable-log-reason|force-down`` (before 2.53).
- ``DELETE /os-services/{id}``: a compute service hosting servers or taking part
  in an unfinished migration is refused (409); otherwise its compute nodes, their
  resource providers, its host mapping and aggregate memberships go with it.

``service_is_up(service, settings)`` and ``host_services(runtime)`` are shared
with the availability-zone and hypervisor routers (and server views' host status).
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session

from atoll.api import policy
from atoll.api.deps import (
    ContextDep,
    JsonBody,
    RuntimeDep,
    VersionDep,
    each_cell,
    is_uuid,
    isotime,
    openapi_body,
)
from atoll.api.errors import validate
from atoll.api.microversion import APIVersion
from atoll.api.schemas.services import (
    ServiceDisableLogReason,
    ServiceForceDown,
    ServiceHost,
    ServiceUpdate,
)
from atoll.availability_zones import host_zones
from atoll.cells import Cell
from atoll.config import Settings
from atoll.db.api_models import AggregateHost, HostMapping
from atoll.db.cell_models import ComputeNode, Instance, Migration, Service
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.exceptions import BadRequest, Conflict, NotFound
from atoll.runtime import Runtime

router = APIRouter(tags=["os-services"])

COMPUTE_BINARY = "nova-compute"
INTERNAL_ZONE = "internal"
FINISHED_MIGRATIONS = frozenset(
    {"confirmed", "reverted", "error", "failed", "completed", "done", "cancelled", "aborted"}
)
RULE = "os_compute_api:os-services:%s"


@dataclass
class ServiceRecord:
    cell: Cell
    service: Service


def service_is_up(service: Service, settings: Settings, now: dt.datetime | None = None) -> bool:
    """Up = not forced down and heard from within ``timeouts.service_down_after``."""
    if service.forced_down:
        return False
    heartbeat = service.last_seen_up or service.created_at
    if heartbeat is None:
        return False
    now = now or utcnow()
    return heartbeat >= now - dt.timedelta(seconds=settings.timeouts.service_down_after)


def host_services(
    runtime: Runtime, *, host: str | None = None, binary: str | None = None
) -> tuple[list[ServiceRecord], list[Cell]]:
    """Live service rows of every cell (filtered), and the cells that did not answer."""
    stmt = select(Service).where(Service.deleted == 0)
    if host is not None:
        stmt = stmt.where(Service.host == host)
    if binary is not None:
        stmt = stmt.where(Service.binary == binary)
    stmt = stmt.order_by(Service.host, Service.binary, Service.id)
    found = each_cell(runtime, lambda _cell, s: list(s.scalars(stmt)))
    records = [ServiceRecord(cell, svc) for cell, rows in found.results for svc in rows]
    return records, found.down


def service_view(
    record: ServiceRecord, version: APIVersion, settings: Settings, zones: dict[str, str]
) -> dict[str, Any]:
    svc = record.service
    body: dict[str, Any] = {
        "id": svc.uuid if version >= "2.53" else svc.id,
        "binary": svc.binary,
        "disabled_reason": svc.disabled_reason,
        "host": svc.host,
        "state": "up" if service_is_up(svc, settings) else "down",
        "status": "disabled" if svc.disabled else "enabled",
        "updated_at": isotime(svc.last_seen_up or svc.updated_at),
        "zone": zones[svc.host] if svc.binary == COMPUTE_BINARY else INTERNAL_ZONE,
    }
    if version >= "2.11":
        body["forced_down"] = bool(svc.forced_down)
    return body


def _zones(runtime: Runtime) -> dict[str, str]:
    return host_zones(runtime.settings.api_db, runtime.settings.default_availability_zone)


def _down_cell_records(
    runtime: Runtime, cells: list[Cell], host: str | None, binary: str | None
) -> list[dict[str, Any]]:
    if not cells or binary not in (None, COMPUTE_BINARY):
        return []
    stmt = select(HostMapping.host).where(HostMapping.cell_id.in_([c.id for c in cells]))
    if host is not None:
        stmt = stmt.where(HostMapping.host == host)
    with session_scope(runtime.settings.api_db) as s:
        hosts = sorted(s.scalars(stmt))
    return [{"binary": COMPUTE_BINARY, "host": h, "status": "UNKNOWN"} for h in hosts]


@router.get("/os-services")
def list_services(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "list")
    host = request.query_params.get("host")
    binary = request.query_params.get("binary")
    records, down = host_services(runtime, host=host, binary=binary)
    zones = _zones(runtime)
    items = [service_view(r, version, runtime.settings, zones) for r in records]
    if version >= "2.69":
        items.extend(_down_cell_records(runtime, down, host, binary))
    return {"services": items}


# -- updates -------------------------------------------------------------------------------


def _find_by_uuid(runtime: Runtime, service_id: str) -> ServiceRecord:
    stmt = select(Service).where(Service.uuid == service_id, Service.deleted == 0)
    found = each_cell(runtime, lambda _cell, s: s.scalar(stmt))
    for cell, svc in found.results:
        if svc is not None:
            return ServiceRecord(cell, svc)
    raise NotFound(f"Service {service_id} could not be found.")


def _find_by_id(runtime: Runtime, service_id: int) -> ServiceRecord:
    stmt = select(Service).where(Service.id == service_id, Service.deleted == 0)
    found = each_cell(runtime, lambda _cell, s: s.scalar(stmt))
    matches = [ServiceRecord(cell, svc) for cell, svc in found.results if svc is not None]
    if not matches:
        raise NotFound(f"Service {service_id} could not be found.")
    if len(matches) > 1:
        raise BadRequest(
            f"Service id {service_id} is ambiguous: it exists in cells "
            f"{', '.join(m.cell.name for m in matches)}. Use microversion 2.53 or later "
            "and the service's uuid."
        )
    return matches[0]


def _find_by_host(runtime: Runtime, host: str, binary: str) -> ServiceRecord:
    with session_scope(runtime.settings.api_db) as s:
        cell_id = s.scalar(select(HostMapping.cell_id).where(HostMapping.host == host))
    if cell_id is None:
        raise NotFound(f"Host '{host}' is not mapped to any cell")
    cell = runtime.cells.by_id(cell_id)
    stmt = select(Service).where(
        Service.host == host, Service.binary == binary, Service.deleted == 0
    )
    found = each_cell(runtime, lambda _cell, s: s.scalar(stmt), cells=[cell])
    if found.down:
        raise NotFound(f"Host '{host}' is in cell {cell.name}, which does not answer.")
    svc = found.results[0][1] if found.results else None
    if svc is None:
        raise NotFound(f"Compute host {host} could not be found.")
    return ServiceRecord(cell, svc)


def _apply(record: ServiceRecord, changes: dict[str, Any]) -> Service:
    if record.service.binary != COMPUTE_BINARY:
        raise BadRequest(
            f"Updating a {record.service.binary} service is not supported. Only "
            "nova-compute services can be updated."
        )
    with session_scope(record.cell.db_url) as s:
        svc = s.get(Service, record.service.id)
        if svc is None or svc.deleted:
            raise NotFound(f"Service {record.service.uuid} could not be found.")
        for key, value in changes.items():
            setattr(svc, key, value)
        svc.updated_at = utcnow()
        s.flush()
        return svc


def _legacy_update(
    action: str, body: dict[str, Any], runtime: Runtime, version: APIVersion
) -> dict[str, Any]:
    if action == "enable":
        spec: ServiceHost = validate(ServiceHost, body)
        _apply(
            _find_by_host(runtime, spec.host, spec.binary),
            {"disabled": False, "disabled_reason": None},
        )
        return {"service": {"binary": spec.binary, "host": spec.host, "status": "enabled"}}
    if action == "disable":
        spec = validate(ServiceHost, body)
        _apply(_find_by_host(runtime, spec.host, spec.binary), {"disabled": True})
        return {"service": {"binary": spec.binary, "host": spec.host, "status": "disabled"}}
    if action == "disable-log-reason":
        reasoned = validate(ServiceDisableLogReason, body)
        _apply(
            _find_by_host(runtime, reasoned.host, reasoned.binary),
            {"disabled": True, "disabled_reason": reasoned.disabled_reason},
        )
        return {
            "service": {
                "binary": reasoned.binary,
                "disabled_reason": reasoned.disabled_reason,
                "host": reasoned.host,
                "status": "disabled",
            }
        }
    if action == "force-down" and version >= "2.11":
        forced = validate(ServiceForceDown, body)
        _apply(
            _find_by_host(runtime, forced.host, forced.binary), {"forced_down": forced.forced_down}
        )
        return {
            "service": {
                "binary": forced.binary,
                "host": forced.host,
                "forced_down": forced.forced_down,
            }
        }
    raise NotFound("Unknown action")


@router.put("/os-services/{service_id}", openapi_extra=openapi_body(ServiceUpdate))
def update_service(
    service_id: str, body: JsonBody, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "update")
    if version < "2.53":
        return _legacy_update(service_id, body, runtime, version)
    if not is_uuid(service_id):
        raise BadRequest(f"Invalid uuid {service_id}")
    spec = validate(ServiceUpdate, body)
    record = _find_by_uuid(runtime, service_id)
    changes: dict[str, Any] = {}
    if spec.status == "enabled":
        changes.update(disabled=False, disabled_reason=None)
    elif spec.status == "disabled":
        changes.update(disabled=True, disabled_reason=spec.disabled_reason)
    if spec.forced_down is not None:
        changes["forced_down"] = spec.forced_down
    record = ServiceRecord(record.cell, _apply(record, changes))
    return {"service": service_view(record, version, runtime.settings, _zones(runtime))}


# -- delete --------------------------------------------------------------------------------


def _check_unused(s: Session, host: str) -> list[str]:
    """The compute node uuids of ``host``; Conflict while it hosts servers or moves."""
    instances = s.scalar(
        select(func.count(Instance.id)).where(Instance.host == host, Instance.deleted == 0)
    )
    if instances:
        raise Conflict(
            "Unable to delete compute service that is hosting instances. Migrate or "
            "delete the instances first."
        )
    moving = s.scalar(
        select(func.count(Migration.id)).where(
            or_(Migration.source_compute == host, Migration.dest_compute == host),
            Migration.deleted == 0,
            Migration.status.not_in(FINISHED_MIGRATIONS),
        )
    )
    if moving:
        raise Conflict(
            "Unable to delete compute service that has in-progress migrations. Complete "
            "the migrations or delete the instances first."
        )
    return list(
        s.scalars(
            select(ComputeNode.uuid).where(ComputeNode.host == host, ComputeNode.deleted == 0)
        )
    )


@router.delete("/os-services/{service_id}", status_code=204)
def delete_service(
    service_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> Response:
    policy.authorize(ctx, RULE % "delete")
    if version >= "2.53":
        if not is_uuid(service_id):
            raise BadRequest(f"Invalid uuid {service_id}")
        record = _find_by_uuid(runtime, service_id)
    else:
        try:
            numeric = int(service_id)
        except ValueError:
            raise BadRequest(f"Invalid service id {service_id}: it must be an integer.") from None
        record = _find_by_id(runtime, numeric)
    svc = record.service
    now = utcnow()
    with session_scope(record.cell.db_url) as s:
        row = s.get(Service, svc.id)
        if row is None or row.deleted:
            raise NotFound(f"Service {service_id} could not be found.")
        if row.binary == COMPUTE_BINARY:
            for node_uuid in _check_unused(s, row.host):
                with contextlib.suppress(NotFound):
                    runtime.placement.delete_provider(node_uuid)
            for node in s.scalars(
                select(ComputeNode).where(ComputeNode.host == row.host, ComputeNode.deleted == 0)
            ):
                node.deleted = node.id
                node.deleted_at = now
        row.deleted = row.id
        row.deleted_at = now
    if svc.binary == COMPUTE_BINARY:
        with session_scope(runtime.settings.api_db) as s:
            s.execute(delete(AggregateHost).where(AggregateHost.host == svc.host))
            s.execute(delete(HostMapping).where(HostMapping.host == svc.host))
    return Response(status_code=204)
