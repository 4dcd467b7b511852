"""Everything below /servers/{id}: tags, instance actions, volume attachments,
interfaces, addresses and metadata."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import delete, select

from atoll import actions
from atoll.api import policy
from atoll.api.deps import ContextDep, RuntimeDep, VersionDep
from atoll.api.schemas.server_subresources import TagsBody, VolumeAttachmentBody
from atoll.api.server_records import ServerRecord, get_server
from atoll.api.views import servers as view
from atoll.conductor import engine
from atoll.conductor.workflows import volumes as volume_workflows
from atoll.context import RequestContext
from atoll.db import instances
from atoll.db.cell_models import BlockDeviceMapping, InstanceAction, InstanceActionEvent, Tag
from atoll.db.session import session_scope
from atoll.exceptions import BadRequest, Conflict, NotFound
from atoll.runtime import Runtime

router = APIRouter()

MAX_TAGS = 50


def _placed(record: ServerRecord) -> str:
    if record.cell is None:
        raise Conflict(
            f"Server {record.uuid} is still being scheduled; try again when it is placed."
        )
    return record.cell.db_url


# ---------------------------------------------------------------- tags (2.26)


def _tags_server(
    rt: Runtime, ctx: RequestContext, ver: Any, server_id: str, rule: str
) -> ServerRecord:
    if ver < "2.26":
        raise NotFound("The resource could not be found.")
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, f"os_compute_api:os-server-tags:{rule}", {"project_id": record.project_id}
    )
    return record


def _valid_tag(tag: str) -> str:
    if not 1 <= len(tag) <= 60 or "," in tag or "/" in tag:
        raise BadRequest(f"Invalid tag {tag!r}: 1-60 characters, no ',' or '/'")
    return tag


@router.get("/servers/{server_id}/tags")
def list_tags(server_id: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep) -> dict:
    record = _tags_server(rt, ctx, ver, server_id, "index")
    return {"tags": record.tags}


@router.put("/servers/{server_id}/tags")
def replace_tags(
    server_id: str, body: TagsBody, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> dict:
    record = _tags_server(rt, ctx, ver, server_id, "update_all")
    cell_db = _placed(record)
    tags = sorted({_valid_tag(t) for t in body.tags})
    with session_scope(cell_db) as s:
        s.execute(delete(Tag).where(Tag.resource_id == server_id))
        s.add_all([Tag(resource_id=server_id, tag=t) for t in tags])
    return {"tags": tags}


@router.delete("/servers/{server_id}/tags", status_code=204)
def delete_tags(server_id: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep) -> Response:
    record = _tags_server(rt, ctx, ver, server_id, "delete_all")
    with session_scope(_placed(record)) as s:
        s.execute(delete(Tag).where(Tag.resource_id == server_id))
    return Response(status_code=204)


@router.get("/servers/{server_id}/tags/{tag}", status_code=204)
def check_tag(
    server_id: str, tag: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> Response:
    record = _tags_server(rt, ctx, ver, server_id, "show")
    if tag not in record.tags:
        raise NotFound(f"Tag {tag} could not be found for server {server_id}.")
    return Response(status_code=204)


@router.put("/servers/{server_id}/tags/{tag}")
def add_tag(
    server_id: str, tag: str, request: Request, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> Response:
    record = _tags_server(rt, ctx, ver, server_id, "update")
    cell_db = _placed(record)
    if tag in record.tags:
        return Response(status_code=204)
    if len(record.tags) >= MAX_TAGS:
        raise BadRequest(f"A server may have at most {MAX_TAGS} tags.")
    with session_scope(cell_db) as s:
        s.add(Tag(resource_id=server_id, tag=_valid_tag(tag)))
    location = f"{str(request.base_url).rstrip('/')}/v2.1/servers/{server_id}/tags/{tag}"
    return Response(status_code=201, headers={"Location": location})


@router.delete("/servers/{server_id}/tags/{tag}", status_code=204)
def remove_tag(
    server_id: str, tag: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> Response:
    record = _tags_server(rt, ctx, ver, server_id, "delete")
    if tag not in record.tags:
        raise NotFound(f"Tag {tag} could not be found for server {server_id}.")
    with session_scope(_placed(record)) as s:
        s.execute(delete(Tag).where(Tag.resource_id == server_id, Tag.tag == tag))
    return Response(status_code=204)


# ---------------------------------------------------------------- instance actions


def _action_view(row: InstanceAction, ver: Any) -> dict[str, Any]:
    body = {
        "action": row.action,
        "instance_uuid": row.instance_uuid,
        "message": row.message,
        "project_id": row.project_id,
        "request_id": row.request_id,
        "start_time": row.start_time.isoformat(),
        "user_id": row.user_id,
    }
    if ver >= "2.58":
        body["updated_at"] = (row.updated_at or row.start_time).isoformat()
    return body


def _event_view(
    ev: InstanceActionEvent, ver: Any, ctx: RequestContext, project_id: str
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event": ev.event,
        "start_time": ev.start_time.isoformat(),
        "finish_time": ev.finish_time.isoformat() if ev.finish_time else None,
        "result": ev.result,
    }
    if ctx.is_admin or ver < "2.51":
        body["traceback"] = ev.traceback if ctx.is_admin else None
    if ver >= "2.62":
        body["hostId"] = view.host_id(project_id, ev.host)
        if ctx.is_admin:
            body["host"] = ev.host
    if ver >= "2.84":
        body["details"] = ev.details
    return body


@router.get("/servers/{server_id}/os-instance-actions")
def list_actions(server_id: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:os-instance-actions:list", {"project_id": record.project_id}
    )
    if record.cell is None:
        return {"instanceActions": []}
    with session_scope(record.cell.db_url) as s:
        rows = s.scalars(
            select(InstanceAction)
            .where(InstanceAction.instance_uuid == server_id, InstanceAction.deleted == 0)
            .order_by(InstanceAction.start_time.desc(), InstanceAction.id.desc())
        ).all()
        return {"instanceActions": [_action_view(r, ver) for r in rows]}


@router.get("/servers/{server_id}/os-instance-actions/{request_id}")
def show_action(
    server_id: str, request_id: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:os-instance-actions:show", {"project_id": record.project_id}
    )
    if record.cell is None:
        raise NotFound(f"Action for request_id {request_id} on instance {server_id} not found")
    with session_scope(record.cell.db_url) as s:
        row = s.scalar(
            select(InstanceAction).where(
                InstanceAction.instance_uuid == server_id,
                InstanceAction.request_id == request_id,
                InstanceAction.deleted == 0,
            )
        )
        if row is None:
            raise NotFound(f"Action for request_id {request_id} on instance {server_id} not found")
        body = _action_view(row, ver)
        show_events = (ver < "2.51" and ctx.is_admin) or ver >= "2.51"
        if show_events:
            events = s.scalars(
                select(InstanceActionEvent)
                .where(InstanceActionEvent.action_id == row.id, InstanceActionEvent.deleted == 0)
                .order_by(InstanceActionEvent.start_time, InstanceActionEvent.id)
            ).all()
            body["events"] = [_event_view(e, ver, ctx, record.project_id) for e in events]
    return {"instanceAction": body}


# ---------------------------------------------------------------- volume attachments


def _attachment_view(server_id: str, vol: dict[str, Any], ver: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "device": vol.get("device"),
        "serverId": server_id,
        "volumeId": vol["id"],
    }
    if ver < "2.89":
        body["id"] = vol["id"]
    if ver >= "2.70":
        body["tag"] = vol.get("tag")
    if ver >= "2.79":
        body["delete_on_termination"] = bool(vol.get("delete_on_termination"))
    if ver >= "2.89":
        body["attachment_id"] = vol.get("attachment_id")
        body["bdm_uuid"] = vol.get("bdm_uuid")
    return body


@router.get("/servers/{server_id}/os-volume_attachments")
def list_attachments(server_id: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:os-volumes-attachments:index", {"project_id": record.project_id}
    )
    return {"volumeAttachments": [_attachment_view(server_id, v, ver) for v in record.volumes]}


@router.get("/servers/{server_id}/os-volume_attachments/{volume_id}")
def show_attachment(
    server_id: str, volume_id: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:os-volumes-attachments:show", {"project_id": record.project_id}
    )
    for vol in record.volumes:
        if vol["id"] == volume_id:
            return {"volumeAttachment": _attachment_view(server_id, vol, ver)}
    raise NotFound(f"Volume {volume_id} is not attached to server {server_id}.")


@router.post("/servers/{server_id}/os-volume_attachments")
def attach(
    server_id: str, body: VolumeAttachmentBody, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:os-volumes-attachments:create", {"project_id": record.project_id}
    )
    req = body.volumeAttachment
    if req.tag and ver < "2.49":
        raise BadRequest("Invalid input for field/attribute tag (needs 2.49)")
    if "delete_on_termination" in req.model_fields_set and ver < "2.79":
        raise BadRequest("Invalid input for field/attribute delete_on_termination (needs 2.79)")
    try:
        volume = rt.volumes.get(req.volumeId)
    except NotFound:
        raise NotFound(f"Volume {req.volumeId} could not be found.") from None
    if any(v["id"] == req.volumeId for v in record.volumes):
        raise BadRequest(
            f"Invalid volume: volume {req.volumeId} is already attached to server {server_id}"
        )
    if volume["status"] != "available":
        raise BadRequest(
            f"Invalid volume: volume {req.volumeId} status must be 'available', "
            f"not '{volume['status']}'"
        )
    cell_db = _placed(record)
    if record.vm_state not in ("active", "stopped", "resized") or record.task_state is not None:
        raise Conflict(
            f"Cannot 'attach_volume' instance {server_id} while it is in vm_state {record.vm_state}"
        )
    device = req.device or f"/dev/vd{chr(ord('a') + len(record.volumes) + 1)}"
    with session_scope(cell_db) as s:
        bdm = BlockDeviceMapping(
            instance_uuid=server_id,
            source_type="volume",
            destination_type="volume",
            volume_id=req.volumeId,
            device_name=device,
            tag=req.tag,
            delete_on_termination=req.delete_on_termination,
        )
        s.add(bdm)
        s.flush()
        bdm_uuid = bdm.uuid
    actions.start_action(cell_db, ctx, server_id, "attach_volume")
    engine.start(
        volume_workflows.attach_volume,
        volume_workflows.workflow_id("attach", server_id, req.volumeId, ctx.request_id),
        ctx.to_dict(),
        server_id,
        req.volumeId,
    )
    return {
        "volumeAttachment": _attachment_view(
            server_id,
            {
                "id": req.volumeId,
                "device": device,
                "tag": req.tag,
                "delete_on_termination": req.delete_on_termination,
                "bdm_uuid": bdm_uuid,
            },
            ver,
        )
    }


@router.delete("/servers/{server_id}/os-volume_attachments/{volume_id}", status_code=202)
def detach(server_id: str, volume_id: str, rt: RuntimeDep, ctx: ContextDep) -> Response:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:os-volumes-attachments:delete", {"project_id": record.project_id}
    )
    vol = next((v for v in record.volumes if v["id"] == volume_id), None)
    if vol is None:
        raise NotFound(f"Volume {volume_id} is not attached to server {server_id}.")
    with session_scope(_placed(record)) as s:
        boot = s.scalar(
            select(BlockDeviceMapping.boot_index).where(
                BlockDeviceMapping.instance_uuid == server_id,
                BlockDeviceMapping.volume_id == volume_id,
                BlockDeviceMapping.deleted == 0,
            )
        )
    if boot == 0:
        raise BadRequest(f"Cannot detach the root volume {volume_id} of server {server_id}.")
    if record.vm_state not in ("active", "stopped", "resized"):
        raise Conflict(
            f"Cannot 'detach_volume' instance {server_id} while it is in vm_state {record.vm_state}"
        )
    cell_db = _placed(record)
    actions.start_action(cell_db, ctx, server_id, "detach_volume")
    engine.start(
        volume_workflows.detach_volume,
        volume_workflows.workflow_id("detach", server_id, volume_id, ctx.request_id),
        ctx.to_dict(),
        server_id,
        volume_id,
    )
    return Response(status_code=202)


# ---------------------------------------------------------------- interfaces, ips, metadata


def _interface_view(vif: dict[str, Any], port: dict[str, Any] | None, ver: Any) -> dict[str, Any]:
    body = {
        "fixed_ips": [
            {"ip_address": ip["ip_address"], "subnet_id": ip["subnet_id"]}
            for ip in (port or {}).get("fixed_ips", [])
        ],
        "mac_addr": vif["mac"],
        "net_id": vif["network_id"],
        "port_id": vif["port_id"],
        "port_state": (port or {}).get("status", "DOWN"),
    }
    if ver >= "2.70":
        body["tag"] = vif.get("tag")
    return body


def _port(rt: Runtime, port_id: str) -> dict[str, Any] | None:
    try:
        return rt.networks.get_port(port_id)
    except NotFound:
        return None


@router.get("/servers/{server_id}/os-interface")
def list_interfaces(server_id: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:os-attach-interfaces:list", {"project_id": record.project_id}
    )
    return {
        "interfaceAttachments": [
            _interface_view(v, _port(rt, v["port_id"]), ver) for v in record.vifs
        ]
    }


@router.get("/servers/{server_id}/os-interface/{port_id}")
def show_interface(
    server_id: str, port_id: str, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:os-attach-interfaces:show", {"project_id": record.project_id}
    )
    for vif in record.vifs:
        if vif["port_id"] == port_id:
            return {"interfaceAttachment": _interface_view(vif, _port(rt, port_id), ver)}
    raise NotFound(f"Port {port_id} is not attached to server {server_id}")


@router.get("/servers/{server_id}/ips")
def list_ips(server_id: str, rt: RuntimeDep, ctx: ContextDep) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(ctx, "os_compute_api:ips:index", {"project_id": record.project_id})
    ports = {v["port_id"]: p for v in record.vifs if (p := _port(rt, v["port_id"]))}
    names = {n["id"]: n["name"] for n in rt.networks.list_networks()}
    addrs = view.addresses(record, ports, names)
    return {
        "addresses": {
            net: [{"addr": a["addr"], "version": a["version"]} for a in items]
            for net, items in addrs.items()
        }
    }


@router.get("/servers/{server_id}/metadata")
def get_metadata(server_id: str, rt: RuntimeDep, ctx: ContextDep) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(ctx, "os_compute_api:server-metadata:index", {"project_id": record.project_id})
    return {"metadata": record.metadata}


def _write_metadata(
    rt: Runtime, ctx: RequestContext, server_id: str, body: dict[str, Any], *, replace: bool
) -> dict:
    record = get_server(rt, ctx, server_id)
    policy.authorize(
        ctx, "os_compute_api:server-metadata:update", {"project_id": record.project_id}
    )
    items = body.get("metadata") if isinstance(body, dict) else None
    if not isinstance(items, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and 1 <= len(k) <= 255 and len(v) <= 255
        for k, v in items.items()
    ):
        raise BadRequest(
            "Invalid input for field/attribute metadata: a mapping of strings "
            "(keys 1-255, values up to 255 characters) is needed"
        )
    merged = dict(items) if replace else {**record.metadata, **items}
    if len(merged) > rt.settings.quota.metadata_items:
        raise BadRequest(
            f"Quota exceeded for metadata_items: at most {rt.settings.quota.metadata_items}"
        )
    instances.save(_placed(record), server_id, metadata_=merged)
    return {"metadata": merged}


@router.put("/servers/{server_id}/metadata")
def replace_metadata(server_id: str, body: dict[str, Any], rt: RuntimeDep, ctx: ContextDep) -> dict:
    return _write_metadata(rt, ctx, server_id, body, replace=True)


@router.post("/servers/{server_id}/metadata")
def update_metadata(server_id: str, body: dict[str, Any], rt: RuntimeDep, ctx: ContextDep) -> dict:
    return _write_metadata(rt, ctx, server_id, body, replace=False)
