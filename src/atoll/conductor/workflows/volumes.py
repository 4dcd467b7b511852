"""Attach and detach a volume on a running or stopped server."""

from __future__ import annotations

from typing import Any

from dbos import DBOS
from sqlalchemy import select

from atoll import actions
from atoll.conductor.common import cell_of, finish
from atoll.conductor.resources import attachment_id_for, connector
from atoll.conductor.steps import boundary, register_boundaries, step
from atoll.context import RequestContext
from atoll.db import instances
from atoll.db.cell_models import BlockDeviceMapping
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.runtime import current

WORKFLOW = "volume"
register_boundaries(WORKFLOW, ["attach", "detach"])


def workflow_id(action: str, instance_uuid: str, volume_id: str, request_id: str) -> str:
    return f"{action}-{instance_uuid}-{volume_id}-{request_id}"


def _bdm(s: Any, instance_uuid: str, volume_id: str) -> BlockDeviceMapping | None:
    return s.scalar(
        select(BlockDeviceMapping).where(
            BlockDeviceMapping.instance_uuid == instance_uuid,
            BlockDeviceMapping.volume_id == volume_id,
            BlockDeviceMapping.deleted == 0,
        )
    )


class Attachment:
    @staticmethod
    @step(name="volume.attach")
    def attach(ctx: dict[str, Any], cell_db: str, instance_uuid: str, volume_id: str) -> None:
        boundary(WORKFLOW, "attach", instance=instance_uuid)
        rt = current()
        inst = instances.get(cell_db, instance_uuid)
        request = RequestContext.from_dict(ctx)
        with actions.action_event(
            cell_db, request, instance_uuid, "compute_attach_volume", inst.host
        ):
            att_id = attachment_id_for(instance_uuid, volume_id, inst.host or "")
            att = rt.volumes.attachment_create(volume_id, instance_uuid, attachment_id=att_id)
            rt.volumes.attachment_update(att["id"], host=inst.host, connector=connector(inst.host))
            with session_scope(cell_db) as s:
                bdm = _bdm(s, instance_uuid, volume_id)
                tag = bdm.tag if bdm else None
            rt.compute(rt.cells.for_host(inst.host)).attach_volume(
                request,
                inst.host,
                instance_uuid,
                volume_id=volume_id,
                attachment_id=att["id"],
                tag=tag,
            )
            rt.volumes.attachment_complete(att["id"])
            with session_scope(cell_db) as s:
                bdm = _bdm(s, instance_uuid, volume_id)
                if bdm is not None:
                    bdm.attachment_id = att["id"]

    @staticmethod
    @step(name="volume.detach")
    def detach(
        ctx: dict[str, Any], cell_db: str, instance_uuid: str, volume_id: str, record: bool = True
    ) -> None:
        """Also the undo of attach: idempotent, and it removes the BDM."""
        boundary(WORKFLOW, "detach", instance=instance_uuid)
        rt = current()
        inst = instances.get(cell_db, instance_uuid)
        request = RequestContext.from_dict(ctx)
        with (
            actions.action_event(
                cell_db, request, instance_uuid, "compute_detach_volume", inst.host
            )
            if record
            else _null()
        ):
            if inst.host:
                rt.compute(rt.cells.for_host(inst.host)).detach_volume(
                    request, inst.host, instance_uuid, volume_id=volume_id
                )
            for att in rt.volumes.attachments(instance_uuid=instance_uuid, volume_id=volume_id):
                rt.volumes.attachment_delete(att["id"])
            with session_scope(cell_db) as s:
                bdm = _bdm(s, instance_uuid, volume_id)
                if bdm is not None:
                    bdm.deleted, bdm.deleted_at = bdm.id, utcnow()


def _null():  # type: ignore[no-untyped-def]
    from contextlib import nullcontext

    return nullcontext()


@DBOS.workflow(name="attach_volume")
def attach_volume(ctx: dict[str, Any], instance_uuid: str, volume_id: str) -> str:
    cell_db = cell_of(instance_uuid).db_url
    try:
        Attachment.attach(ctx, cell_db, instance_uuid, volume_id)
    except Exception:
        Attachment.detach(ctx, cell_db, instance_uuid, volume_id, False)
        finish(ctx, cell_db, instance_uuid, None)
        return "error"
    finish(ctx, cell_db, instance_uuid, "instance.volume_attach.end")
    return "attached"


@DBOS.workflow(name="detach_volume")
def detach_volume(ctx: dict[str, Any], instance_uuid: str, volume_id: str) -> str:
    cell_db = cell_of(instance_uuid).db_url
    try:
        Attachment.detach(ctx, cell_db, instance_uuid, volume_id, True)
    except Exception:
        finish(ctx, cell_db, instance_uuid, None)
        return "error"
    finish(ctx, cell_db, instance_uuid, "instance.volume_detach.end")
    return "detached"
