"""Steps that bind a server's ports and volumes to a host, each with its undo.

Shared by builds and moves, so that "bind on this host" and "unbind from this
host" exist once.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select

from atoll.conductor.steps import step
from atoll.db.cell_models import BlockDeviceMapping, VirtualInterface
from atoll.db.session import session_scope
from atoll.runtime import current

ATTACHMENT_NS = uuid.UUID("5b0e7a52-8f6b-4b59-9d4c-2b1f3c0e6a11")


def attachment_id_for(instance_uuid: str, volume_id: str, host: str) -> str:
    """Deterministic, so a step resumed after a crash finds the attachment it made."""
    return str(uuid.uuid5(ATTACHMENT_NS, f"{instance_uuid}:{volume_id}:{host}"))


def connector(host: str) -> dict[str, Any]:
    return {"host": host, "initiator": f"iqn.2026-11.io.atoll:{host}", "multipath": False}


class HostNetworks:
    """Port bindings of a server on one host."""

    @staticmethod
    @step(name="bind_networks")
    def bind(cell_db: str, instance_uuid: str, host: str, active: bool = True) -> None:
        net = current().networks
        for port_id in ports_of(cell_db, instance_uuid):
            net.create_binding(port_id, host, active=False)
            if active:
                net.activate_binding(port_id, host)
            net.update_port(port_id, device_id=instance_uuid, device_owner="compute:atoll")

    @staticmethod
    @step(name="unbind_networks")
    def unbind(cell_db: str, instance_uuid: str, host: str) -> None:
        net = current().networks
        for port_id in ports_of(cell_db, instance_uuid):
            net.delete_binding(port_id, host)


class HostVolumes:
    """Volume attachments of a server for one host."""

    @staticmethod
    @step(name="attach_volumes")
    def attach(cell_db: str, instance_uuid: str, host: str) -> None:
        vol = current().volumes
        with session_scope(cell_db) as s:
            bdms = s.scalars(_volume_bdms(instance_uuid)).all()
            for bdm in bdms:
                att = vol.attachment_create(
                    bdm.volume_id,
                    instance_uuid,
                    attachment_id=attachment_id_for(instance_uuid, bdm.volume_id, host),
                )
                vol.attachment_update(att["id"], host=host, connector=connector(host))
                vol.attachment_complete(att["id"])
                bdm.attachment_id = att["id"]

    @staticmethod
    @step(name="detach_volumes")
    def detach(cell_db: str, instance_uuid: str, host: str | None = None) -> None:
        vol = current().volumes
        with session_scope(cell_db) as s:
            for bdm in s.scalars(_volume_bdms(instance_uuid)).all():
                for att in vol.attachments(instance_uuid=instance_uuid, volume_id=bdm.volume_id):
                    if host is None or att.get("host") in (host, None):
                        vol.attachment_delete(att["id"])
                if bdm.attachment_id and not vol.attachments(
                    instance_uuid=instance_uuid, volume_id=bdm.volume_id
                ):
                    bdm.attachment_id = None


def _volume_bdms(instance_uuid: str):  # type: ignore[no-untyped-def]
    return select(BlockDeviceMapping).where(
        BlockDeviceMapping.instance_uuid == instance_uuid,
        BlockDeviceMapping.deleted == 0,
        BlockDeviceMapping.destination_type == "volume",
        BlockDeviceMapping.volume_id.is_not(None),
    )


def ports_of(cell_db: str, instance_uuid: str) -> list[str]:
    with session_scope(cell_db) as s:
        return list(
            s.scalars(
                select(VirtualInterface.uuid).where(
                    VirtualInterface.instance_uuid == instance_uuid,
                    VirtualInterface.deleted == 0,
                )
            )
        )


def block_devices(cell_db: str, instance_uuid: str) -> list[dict[str, Any]]:
    """What the driver needs to know of a server's volumes."""
    with session_scope(cell_db) as s:
        return [
            {
                "volume_id": b.volume_id,
                "attachment_id": b.attachment_id,
                "boot_index": b.boot_index,
                "device_name": b.device_name,
                "tag": b.tag,
            }
            for b in s.scalars(_volume_bdms(instance_uuid)).all()
        ]
