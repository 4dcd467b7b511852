"""Hypervisors (``/os-hypervisors``): admin only, one per compute node of every cell.

``id`` is the compute node's row id before 2.53 and its uuid from 2.53 (row ids
repeat across cells, which is why Nova moved to uuids).  ``state`` is up/down
from the host's compute service heartbeat, ``status`` enabled/disabled from
the service.  Usage fields are what placement holds claimed on the node (the old flavor of
a move awaiting confirm included), else the node's last report; from 2.88
they are gone from the body (read placement instead) and ``uptime`` is in it.

Paging (``limit``/``marker``) from 2.33; ``hypervisor_hostname_pattern`` and
``with_servers`` from 2.53, replacing ``/{pattern}/search`` and
``/{pattern}/servers``; ``/statistics`` and ``/{id}/uptime`` end at 2.87.
A cell whose database does not answer is left out with a warning.
"""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import and_, select

from atoll.api import links, policy
from atoll.api.deps import (
    ContextDep,
    RuntimeDep,
    VersionDep,
    each_cell,
    is_uuid,
    page_params,
    paginate,
    parse_bool_query,
)
from atoll.api.microversion import APIVersion, require
from atoll.api.routers.services import COMPUTE_BINARY, service_is_up
from atoll.cells import Cell
from atoll.db.cell_models import ComputeNode, Instance, Service
from atoll.db.types import utcnow
from atoll.exceptions import AtollError, BadRequest, NotFound
from atoll.runtime import Runtime

router = APIRouter(tags=["os-hypervisors"])

RULE = "os_compute_api:os-hypervisors:%s"


@dataclass
class Hypervisor:
    cell: Cell
    node: ComputeNode
    service: Service
    servers: list[tuple[int, str, str | None]] = field(default_factory=list)  # id, uuid, task

    def id_for(self, version: APIVersion) -> Any:
        return self.node.uuid if version >= "2.53" else self.node.id


def _load(
    runtime: Runtime,
    *,
    node_uuid: str | None = None,
    node_id: int | None = None,
    pattern: str | None = None,
    with_instances: bool = False,
) -> list[Hypervisor]:
    stmt = (
        select(ComputeNode, Service)
        .join(
            Service,
            and_(
                Service.host == ComputeNode.host,
                Service.binary == COMPUTE_BINARY,
                Service.deleted == 0,
            ),
        )
        .where(ComputeNode.deleted == 0)
        .order_by(ComputeNode.id)
    )
    if node_uuid is not None:
        stmt = stmt.where(ComputeNode.uuid == node_uuid)
    if node_id is not None:
        stmt = stmt.where(ComputeNode.id == node_id)
    if pattern is not None:
        escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(ComputeNode.hypervisor_hostname.like(f"%{escaped}%", escape="\\"))

    def read(cell: Cell, s: Any) -> list[Hypervisor]:
        found = [Hypervisor(cell, node, svc) for node, svc in s.execute(stmt).all()]
        if with_instances and found:
            by_host: dict[str, list[tuple[int, str, str | None]]] = defaultdict(list)
            rows = s.execute(
                select(Instance.host, Instance.id, Instance.uuid, Instance.task_state)
                .where(
                    Instance.deleted == 0,
                    Instance.host.in_({h.node.host for h in found}),
                )
                .order_by(Instance.id)
            ).all()
            for host, iid, uuid, task in rows:
                by_host[host].append((iid, uuid, task))
            for hyp in found:
                hyp.servers = by_host.get(hyp.node.host, [])
        return found

    results = each_cell(runtime, read)
    return [hyp for _cell, hyps in results.results for hyp in hyps]


def _cpu_info(node: ComputeNode) -> dict[str, Any]:
    return {
        "arch": platform.machine() or "x86_64",
        "model": node.hypervisor_type,
        "vendor": "atoll",
        "features": [],
        "topology": {"cores": node.vcpus, "threads": 1, "sockets": 1},
    }


def _uptime(hyp: Hypervisor) -> str:
    """An ``uptime``-style line (clients parse it) counting from the service's start."""
    now = utcnow()
    delta = now - (hyp.service.created_at or now)
    days, rest = divmod(int(delta.total_seconds()), 86400)
    hours, minutes = rest // 3600, (rest % 3600) // 60
    return (
        f" {now:%H:%M:%S} up {days} days, {hours:2d}:{minutes:02d},  0 users,  "
        "load average: 0.00, 0.00, 0.00"
    )


def _summary(hyp: Hypervisor, version: APIVersion, runtime: Runtime) -> dict[str, Any]:
    return {
        "hypervisor_hostname": hyp.node.hypervisor_hostname,
        "id": hyp.id_for(version),
        "state": "up" if service_is_up(hyp.service, runtime.settings) else "down",
        "status": "disabled" if hyp.service.disabled else "enabled",
    }


def _servers(hyp: Hypervisor) -> list[dict[str, str]]:
    return [{"name": f"instance-{iid:08x}", "uuid": uuid} for iid, uuid, _task in hyp.servers]


def _detail(hyp: Hypervisor, version: APIVersion, runtime: Runtime) -> dict[str, Any]:
    body = _summary(hyp, version, runtime)
    node, svc = hyp.node, hyp.service
    body.update(
        {
            "host_ip": node.host_ip,
            "hypervisor_type": node.hypervisor_type,
            "hypervisor_version": node.hypervisor_version,
            "service": {
                "host": svc.host,
                "id": svc.uuid if version >= "2.53" else svc.id,
                "disabled_reason": svc.disabled_reason,
            },
        }
    )
    if version >= "2.88":
        body["uptime"] = _uptime(hyp)
        return body
    cpu_info = _cpu_info(node)
    # Usage is what is claimed in placement, like Nova's resource tracker: it
    # includes the old flavor a source host keeps for a move awaiting confirm.
    try:
        claimed = runtime.placement.usages(node.uuid)
    except AtollError:
        claimed = {}
    vcpus_used = claimed.get("VCPU", node.vcpus_used)
    memory_mb_used = claimed.get("MEMORY_MB", node.memory_mb_used)
    local_gb_used = claimed.get("DISK_GB", node.local_gb_used)
    free_disk = node.local_gb - local_gb_used
    body.update(
        {
            "cpu_info": cpu_info if version >= "2.28" else json.dumps(cpu_info),
            "current_workload": sum(1 for _i, _u, task in hyp.servers if task),
            "disk_available_least": free_disk,
            "free_disk_gb": free_disk,
            "free_ram_mb": node.memory_mb - memory_mb_used,
            "local_gb": node.local_gb,
            "local_gb_used": local_gb_used,
            "memory_mb": node.memory_mb,
            "memory_mb_used": memory_mb_used,
            "running_vms": node.running_vms,
            "vcpus": node.vcpus,
            "vcpus_used": vcpus_used,
        }
    )
    return body


def _with_servers(request: Request, version: APIVersion) -> bool:
    if version < "2.53":
        return False
    return bool(parse_bool_query(request.query_params.get("with_servers"), "with_servers", False))


def _add_servers(
    body: dict[str, Any], hyp: Hypervisor, version: APIVersion, with_servers: bool
) -> None:
    if not with_servers:
        return
    servers = _servers(hyp)
    if servers or version >= "2.75":
        body["servers"] = servers


def _index(
    request: Request, runtime: Runtime, version: APIVersion, *, detail: bool
) -> dict[str, Any]:
    params = request.query_params
    with_servers = _with_servers(request, version)
    pattern = params.get("hypervisor_hostname_pattern") if version >= "2.53" else None
    page = page_params(request) if version >= "2.33" else None
    if pattern is not None and page is not None and (page.limit is not None or page.marker):
        raise BadRequest(
            "Paging over hypervisors with the hypervisor_hostname_pattern query "
            "parameter is not supported."
        )
    hyps = _load(runtime, pattern=pattern, with_instances=detail or with_servers)
    if pattern is not None and not hyps:
        raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    if page is not None:
        if page.marker is not None and version >= "2.53" and not is_uuid(page.marker):
            raise BadRequest(f"Invalid marker {page.marker}: it must be a hypervisor uuid.")
        hyps = paginate(hyps, page, key=lambda h: h.id_for(version))
    items = []
    for hyp in hyps:
        item = (_detail if detail else _summary)(hyp, version, runtime)
        _add_servers(item, hyp, version, with_servers)
        items.append(item)
    body: dict[str, Any] = {"hypervisors": items}
    if page is not None and pattern is None:
        collection = "os-hypervisors/detail" if detail else "os-hypervisors"
        next_links = links.collection_links(request, collection, items, page.limit)
        if next_links:
            body["hypervisors_links"] = next_links
    return body


@router.get("/os-hypervisors")
def list_hypervisors(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "list")
    return _index(request, runtime, version, detail=False)


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(
    request: Request, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "list-detail")
    return _index(request, runtime, version, detail=True)


@router.get("/os-hypervisors/statistics")
def hypervisor_statistics(
    runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    require(version, "2.1", "2.87")
    policy.authorize(ctx, RULE % "statistics")
    hyps = _load(runtime, with_instances=True)
    fields = (
        "current_workload",
        "disk_available_least",
        "free_disk_gb",
        "free_ram_mb",
        "local_gb",
        "local_gb_used",
        "memory_mb",
        "memory_mb_used",
        "running_vms",
        "vcpus",
        "vcpus_used",
    )
    stats: dict[str, int] = {"count": len(hyps), **dict.fromkeys(fields, 0)}
    for hyp in hyps:
        detail = _detail(hyp, APIVersion(2, 28), runtime)
        for name in fields:
            stats[name] += int(detail[name])
    return {"hypervisor_statistics": stats}


def _one(runtime: Runtime, hypervisor_id: str, version: APIVersion) -> Hypervisor:
    if version >= "2.53":
        if not is_uuid(hypervisor_id):
            raise BadRequest(f"Invalid uuid {hypervisor_id}")
        found = _load(runtime, node_uuid=hypervisor_id, with_instances=True)
    else:
        try:
            numeric = int(hypervisor_id)
        except ValueError:
            numeric = None
        found = [] if numeric is None else _load(runtime, node_id=numeric, with_instances=True)
    if not found:
        raise NotFound(f"Hypervisor with ID '{hypervisor_id}' could not be found.")
    return found[0]


@router.get("/os-hypervisors/{hypervisor_id}")
def show_hypervisor(
    hypervisor_id: str,
    request: Request,
    runtime: RuntimeDep,
    ctx: ContextDep,
    version: VersionDep,
) -> dict[str, Any]:
    policy.authorize(ctx, RULE % "show")
    with_servers = _with_servers(request, version)
    hyp = _one(runtime, hypervisor_id, version)
    body = _detail(hyp, version, runtime)
    _add_servers(body, hyp, version, with_servers)
    return {"hypervisor": body}


@router.get("/os-hypervisors/{hypervisor_id}/uptime")
def hypervisor_uptime(
    hypervisor_id: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    require(version, "2.1", "2.87")
    policy.authorize(ctx, RULE % "uptime")
    hyp = _one(runtime, hypervisor_id, version)
    body = _summary(hyp, version, runtime)
    body["uptime"] = _uptime(hyp)
    return {"hypervisor": body}


def _matching(runtime: Runtime, pattern: str, *, with_instances: bool) -> list[Hypervisor]:
    found = _load(runtime, pattern=pattern, with_instances=with_instances)
    if not found:
        raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
    return found


@router.get("/os-hypervisors/{pattern}/search")
def search_hypervisors(
    pattern: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    require(version, "2.1", "2.52")
    policy.authorize(ctx, RULE % "search")
    found = _matching(runtime, pattern, with_instances=False)
    return {"hypervisors": [_summary(h, version, runtime) for h in found]}


@router.get("/os-hypervisors/{pattern}/servers")
def hypervisor_servers(
    pattern: str, runtime: RuntimeDep, ctx: ContextDep, version: VersionDep
) -> dict[str, Any]:
    require(version, "2.1", "2.52")
    policy.authorize(ctx, RULE % "servers")
    items = []
    for hyp in _matching(runtime, pattern, with_instances=True):
        item = _summary(hyp, version, runtime)
        servers = _servers(hyp)
        if servers:
            item["servers"] = servers
        items.append(item)
    return {"hypervisors": items}
