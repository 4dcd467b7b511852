"""Finding servers for the API, across every cell, as plain records for the views.

A server is either a row in a cell DB or, while it waits to be placed, a build
request in the API DB; both become a ``ServerRecord``.  Related rows (tags,
ports, volumes, the latest fault) are fetched in bulk per cell, never per server.
A cell whose DB does not answer is reported back so listings can show its
servers as down-cell records (microversion 2.69) instead of failing.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.exc import SQLAlchemyError

from atoll.cells import Cell
from atoll.context import RequestContext
from atoll.db.api_models import BuildRequest, InstanceGroup, InstanceGroupMember, InstanceMapping
from atoll.db.cell_models import (
    BlockDeviceMapping,
    Instance,
    InstanceFault,
    Tag,
    VirtualInterface,
)
from atoll.db.session import session_scope
from atoll.exceptions import NotFound
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)


@dataclass
class ServerRecord:
    uuid: str
    name: str
    project_id: str
    user_id: str
    vm_state: str
    task_state: str | None
    power_state: int
    host: str | None
    node: str | None
    availability_zone: str | None
    flavor: dict[str, Any]
    image_ref: str
    key_name: str | None
    metadata: dict[str, str]
    created_at: dt.datetime
    updated_at: dt.datetime | None
    launched_at: dt.datetime | None = None
    terminated_at: dt.datetime | None = None
    description: str | None = None
    hostname: str = ""
    access_ip_v4: str | None = None
    access_ip_v6: str | None = None
    config_drive: str = ""
    locked: bool = False
    launch_index: int = 0
    root_device_name: str | None = None
    user_data: str | None = None
    instance_id: int = 0
    deleted: bool = False
    cell: Cell | None = None
    tags: list[str] = field(default_factory=list)
    vifs: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    fault: dict[str, Any] | None = None
    group_uuids: list[str] = field(default_factory=list)
    requested_az: str | None = None
    scheduler_hints: dict[str, Any] = field(default_factory=dict)


@dataclass
class DownCellServer:
    """What the API DB alone knows of a server whose cell is unreachable."""

    uuid: str
    project_id: str
    created_at: dt.datetime
    cell: Cell


def _from_instance(inst: Instance, cell: Cell) -> ServerRecord:
    return ServerRecord(
        uuid=inst.uuid,
        name=inst.display_name,
        project_id=inst.project_id,
        user_id=inst.user_id,
        vm_state=inst.vm_state,
        task_state=inst.task_state,
        power_state=inst.power_state,
        host=inst.host,
        node=inst.node,
        availability_zone=inst.availability_zone,
        flavor=inst.flavor["cur"],
        image_ref=inst.image_ref,
        key_name=inst.key_name,
        metadata=dict(inst.metadata_ or {}),
        created_at=inst.created_at,
        updated_at=inst.updated_at,
        launched_at=inst.launched_at,
        terminated_at=inst.terminated_at,
        description=inst.display_description,
        hostname=inst.hostname,
        access_ip_v4=inst.access_ip_v4,
        access_ip_v6=inst.access_ip_v6,
        config_drive=inst.config_drive,
        locked=inst.locked,
        launch_index=inst.launch_index,
        root_device_name=inst.root_device_name,
        user_data=inst.user_data,
        instance_id=inst.id,
        deleted=inst.deleted != 0,
        cell=cell,
    )


def _from_build_request(br: BuildRequest) -> ServerRecord:
    data = br.instance
    return ServerRecord(
        uuid=br.instance_uuid,
        name=data.get("display_name", ""),
        project_id=data["project_id"],
        user_id=data["user_id"],
        vm_state="building",
        task_state="scheduling",
        power_state=0,
        host=None,
        node=None,
        availability_zone=data.get("availability_zone"),
        flavor=data["flavor"],
        image_ref=data.get("image_ref") or "",
        key_name=data.get("key_name"),
        metadata=dict(data.get("metadata") or {}),
        created_at=br.created_at,
        updated_at=br.created_at,
        description=data.get("display_description"),
        hostname=data.get("hostname", ""),
        access_ip_v4=data.get("access_ip_v4"),
        access_ip_v6=data.get("access_ip_v6"),
        config_drive=data.get("config_drive") or "",
        user_data=data.get("user_data"),
        tags=list(br.tags or []),
        volumes=[
            {"id": b["volume_id"], "delete_on_termination": bool(b.get("delete_on_termination"))}
            for b in br.block_device_mappings or []
            if b.get("volume_id")
        ],
    )


def _attach_related(s: Any, records: dict[str, ServerRecord]) -> None:
    """Tags, VIFs, volumes and the newest fault of these servers, in one query each."""
    if not records:
        return
    uuids = list(records)
    for chunk_start in range(0, len(uuids), 500):
        chunk = uuids[chunk_start : chunk_start + 500]
        for rid, tag in s.execute(
            select(Tag.resource_id, Tag.tag).where(Tag.resource_id.in_(chunk))
        ):
            records[rid].tags.append(tag)
        for vif in s.scalars(
            select(VirtualInterface)
            .where(VirtualInterface.instance_uuid.in_(chunk), VirtualInterface.deleted == 0)
            .order_by(VirtualInterface.id)
        ):
            records[vif.instance_uuid].vifs.append(
                {
                    "port_id": vif.uuid,
                    "network_id": vif.network_id,
                    "mac": vif.address,
                    "tag": vif.tag,
                }
            )
        for bdm in s.scalars(
            select(BlockDeviceMapping)
            .where(
                BlockDeviceMapping.instance_uuid.in_(chunk),
                BlockDeviceMapping.deleted == 0,
                BlockDeviceMapping.volume_id.is_not(None),
            )
            .order_by(BlockDeviceMapping.id)
        ):
            records[bdm.instance_uuid].volumes.append(
                {
                    "id": bdm.volume_id,
                    "delete_on_termination": bdm.delete_on_termination,
                    "tag": bdm.tag,
                    "device": bdm.device_name,
                    "bdm_uuid": bdm.uuid,
                    "attachment_id": bdm.attachment_id,
                }
            )
        errored = [u for u in chunk if records[u].vm_state == "error"]
        if errored:
            for fault in s.scalars(
                select(InstanceFault)
                .where(InstanceFault.instance_uuid.in_(errored), InstanceFault.deleted == 0)
                .order_by(InstanceFault.id)
            ):
                records[fault.instance_uuid].fault = {
                    "code": fault.code,
                    "created": fault.created_at,
                    "message": fault.message,
                    "details": fault.details,
                }
    for record in records.values():
        record.tags.sort()


def _attach_groups(rt: Runtime, records: list[ServerRecord]) -> None:
    if not records:
        return
    with session_scope(rt.settings.api_db) as s:
        rows = s.execute(
            select(InstanceGroupMember.instance_uuid, InstanceGroup.uuid)
            .join(InstanceGroup, InstanceGroup.id == InstanceGroupMember.group_id)
            .where(InstanceGroupMember.instance_uuid.in_([r.uuid for r in records]))
        ).all()
    by_uuid = {r.uuid: r for r in records}
    for instance_uuid, group_uuid in rows:
        by_uuid[instance_uuid].group_uuids.append(group_uuid)


def get_server(
    rt: Runtime, ctx: RequestContext, uuid: str, *, with_groups: bool = False
) -> ServerRecord:
    """One server the caller may see; another project's server is a 404, like Nova."""
    for _attempt in range(5):
        # The mapping and the copy live in different databases, and a build or a
        # cross-cell move changes both: read the mapping again when what it named
        # is gone by the time we look (the server was just placed or moved).
        record = _read_mapped(rt, ctx, uuid)
        if record is not None:
            break
    else:
        raise NotFound(f"Instance {uuid} could not be found.")
    if with_groups:
        _attach_groups(rt, [record])
    return record


def _read_mapped(rt: Runtime, ctx: RequestContext, uuid: str) -> ServerRecord | None:
    """The server where its mapping says it is; None if it was not there on looking."""
    with session_scope(rt.settings.api_db) as s:
        mapping = s.scalar(select(InstanceMapping).where(InstanceMapping.instance_uuid == uuid))
        if mapping is None or mapping.queued_for_delete:
            raise NotFound(f"Instance {uuid} could not be found.")
        if not ctx.is_admin and mapping.project_id != ctx.project_id:
            raise NotFound(f"Instance {uuid} could not be found.")
        cell_id = mapping.cell_id
        if cell_id is None:
            br = s.scalar(select(BuildRequest).where(BuildRequest.instance_uuid == uuid))
            return None if br is None else _from_build_request(br)
    cell = rt.cells.by_id(cell_id)
    with session_scope(cell.db_url) as s:
        inst = s.scalar(
            select(Instance).where(
                Instance.uuid == uuid, Instance.deleted == 0, Instance.hidden.is_(False)
            )
        )
        if inst is None:
            return None
        record = _from_instance(inst, cell)
        _attach_related(s, {uuid: record})
    return record


@dataclass
class ListQuery:
    project_id: str | None  # None: every project (admin all_tenants)
    deleted: bool = False
    filters: list[Any] = field(default_factory=list)  # SQL conditions on Instance
    br_filter: Any = None  # python predicate on build-request ServerRecords
    changes_since: dt.datetime | None = None
    changes_before: dt.datetime | None = None


def list_servers(
    rt: Runtime, query: ListQuery, *, with_groups: bool = False
) -> tuple[list[ServerRecord], list[DownCellServer]]:
    records: list[ServerRecord] = []
    down: list[DownCellServer] = []
    # Build requests first: a server placed between the two reads then shows up
    # twice (dropped below) instead of not at all.
    building: list[ServerRecord] = []
    if not query.deleted:
        with session_scope(rt.settings.api_db) as s:
            stmt2 = select(BuildRequest)
            if query.project_id is not None:
                stmt2 = stmt2.where(BuildRequest.project_id == query.project_id)
            for br in s.scalars(stmt2):
                record = _from_build_request(br)
                if query.br_filter is None or query.br_filter(record):
                    building.append(record)
    for cell in rt.cells.all():
        stmt: Select[Any] = select(Instance).where(Instance.hidden.is_(False))
        if not query.deleted:
            stmt = stmt.where(Instance.deleted == 0)
        if query.project_id is not None:
            stmt = stmt.where(Instance.project_id == query.project_id)
        if query.changes_since is not None:
            stmt = stmt.where(Instance.updated_at >= query.changes_since)
        if query.changes_before is not None:
            stmt = stmt.where(Instance.updated_at <= query.changes_before)
        for cond in query.filters:
            stmt = stmt.where(cond)
        try:
            with session_scope(cell.db_url) as s:
                found = {}
                for inst in s.scalars(stmt):
                    found.setdefault(inst.uuid, _from_instance(inst, cell))
                _attach_related(s, found)
            records.extend(found.values())
        except SQLAlchemyError as exc:
            LOG.warning(
                "cell %s is unreachable, listing its servers as down: %s",
                cell.name,
                exc.__class__.__name__,
            )
            down.extend(_down_cell_servers(rt, cell, query.project_id))
    records = _one_copy_each(rt, records)
    placed = {r.uuid for r in records}
    records.extend(r for r in building if r.uuid not in placed)
    if with_groups:
        _attach_groups(rt, records)
    return records, down


def _one_copy_each(rt: Runtime, records: list[ServerRecord]) -> list[ServerRecord]:
    """At the instant a cross-cell move swaps copies both may be visible: keep the
    one in the cell the instance mapping names."""
    seen: dict[str, list[ServerRecord]] = {}
    for record in records:
        seen.setdefault(record.uuid, []).append(record)
    twice = [uuid for uuid, copies in seen.items() if len(copies) > 1]
    if not twice:
        return records
    with session_scope(rt.settings.api_db) as s:
        mapped = dict(
            s.execute(
                select(InstanceMapping.instance_uuid, InstanceMapping.cell_id).where(
                    InstanceMapping.instance_uuid.in_(twice)
                )
            ).all()
        )
    out = []
    for record in records:
        copies = seen[record.uuid]
        in_mapped_cell = record.cell is not None and record.cell.id == mapped.get(record.uuid)
        if len(copies) == 1 or in_mapped_cell:
            out.append(record)
    return out


def _down_cell_servers(rt: Runtime, cell: Cell, project_id: str | None) -> list[DownCellServer]:
    with session_scope(rt.settings.api_db) as s:
        stmt = select(InstanceMapping).where(
            InstanceMapping.cell_id == cell.id, InstanceMapping.queued_for_delete.is_(False)
        )
        if project_id is not None:
            stmt = stmt.where(InstanceMapping.project_id == project_id)
        return [
            DownCellServer(
                uuid=m.instance_uuid, project_id=m.project_id, created_at=m.created_at, cell=cell
            )
            for m in s.scalars(stmt)
        ]
