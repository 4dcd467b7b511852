"""The embedded volume service (stands in for Cinder, with its attachment API).

An attachment goes ``reserved`` (created without a host: Nova's "empty"
attachment) -> ``attaching`` (updated with the host's connector) -> ``attached``
(completed).  The volume's status follows its attachments: ``available`` with
none, otherwise ``reserved`` / ``attaching`` / ``in-use`` after the most
advanced one.  Volumes are not multi-attach: several attachments exist at once
only for one server (a move holds the source host's and the destination's).

Every change to a volume or its attachments first locks the volume's row, so
two servers racing for one volume cannot both win.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from atoll.db.session import session_scope
from atoll.db.types import new_uuid
from atoll.exceptions import BadRequest, Conflict, NotFound
from atoll.services._common import iso, lock_row
from atoll.services.models import Volume, VolumeAttachment

ATTACHMENT_STATUSES = ("reserved", "attaching", "attached")
# Volume statuses owned by the attachments; the others (deleting, error) are left alone.
_FOLLOWS_ATTACHMENTS = frozenset({"available", "reserved", "attaching", "in-use"})
_VOLUME_STATUS_FOR = {"attached": "in-use", "attaching": "attaching", "reserved": "reserved"}


def _connection_info(row: VolumeAttachment) -> dict[str, Any] | None:
    """What a host needs to connect the volume; only once the attachment has a connector."""
    if row.status == "reserved" or row.connector is None:
        return None
    return {
        "driver_volume_type": "atoll",
        "data": {
            "volume_id": row.volume_id,
            "attachment_id": row.id,
            "access_mode": row.attach_mode,
            "host": row.host,
        },
    }


def _attachment_dict(row: VolumeAttachment) -> dict[str, Any]:
    return {
        "id": row.id,
        "volume_id": row.volume_id,
        "instance_uuid": row.instance_uuid,
        "host": row.host,
        "connector": dict(row.connector) if row.connector is not None else None,
        "status": row.status,
        "attach_mode": row.attach_mode,
        "connection_info": _connection_info(row),
        "created_at": iso(row.created_at),
    }


def _volume_dict(row: Volume) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "size": row.size,
        "status": row.status,
        "bootable": row.bootable,
        "image_id": row.image_id,
        "project_id": row.project_id,
        "created_at": iso(row.created_at),
        "attachments": [_attachment_dict(a) for a in row.attachments],
    }


class VolumeService:
    def __init__(self, db_url: str) -> None:
        self.db_url = db_url

    # --- helpers ---------------------------------------------------------------------------

    @staticmethod
    def _volume(session: Any, volume_id: str, *, lock: bool = False) -> Volume:
        if lock:
            lock_row(session, Volume, volume_id)
        row = session.get(Volume, volume_id)
        if row is None:
            raise NotFound(f"Volume {volume_id} could not be found.")
        return row

    def _attachment_volume_id(self, attachment_id: str) -> str:
        """The volume of an attachment (it never changes), read in a transaction of its own.

        Kept out of the locking transaction so that the lock is that transaction's
        first statement: under MariaDB's REPEATABLE READ a read before it would pin
        a snapshot older than the lock and hide what the previous holder wrote.
        """
        with session_scope(self.db_url) as s:
            volume_id = s.scalar(
                select(VolumeAttachment.volume_id).where(VolumeAttachment.id == attachment_id)
            )
        if volume_id is None:
            raise NotFound(f"Volume attachment {attachment_id} could not be found.")
        return volume_id

    @staticmethod
    def _locked_attachment(session: Any, volume_id: str, attachment_id: str) -> VolumeAttachment:
        """The attachment, with its volume's row locked (first statement of the transaction)."""
        lock_row(session, Volume, volume_id)
        row = session.get(VolumeAttachment, attachment_id)
        if row is None:  # deleted while we waited for the lock
            raise NotFound(f"Volume attachment {attachment_id} could not be found.")
        return row

    @staticmethod
    def _refresh_status(session: Any, volume: Volume) -> None:
        session.flush()
        session.refresh(volume, ["attachments"])
        if volume.status not in _FOLLOWS_ATTACHMENTS:
            return
        statuses = {a.status for a in volume.attachments}
        for att_status in ("attached", "attaching", "reserved"):
            if att_status in statuses:
                volume.status = _VOLUME_STATUS_FOR[att_status]
                return
        volume.status = "available"

    # --- volumes ---------------------------------------------------------------------------

    def create(
        self,
        size: int,
        *,
        name: str = "",
        project_id: str,
        image_id: str | None = None,
        bootable: bool = False,
        volume_id: str | None = None,
    ) -> dict[str, Any]:
        """An available volume of ``size`` GB.

        With a ``volume_id`` that already exists, that volume is returned unchanged
        (a retried create does no harm).
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise BadRequest(f"Invalid volume size {size!r}: a whole number of GB, at least 1.")
        vid = volume_id or new_uuid()
        with session_scope(self.db_url) as s:
            existing = s.get(Volume, vid)
            if existing is not None:
                return _volume_dict(existing)
            row = Volume(
                id=vid,
                name=name,
                size=size,
                status="available",
                bootable=bootable,
                image_id=image_id,
                project_id=project_id,
            )
            s.add(row)
            s.flush()
            s.refresh(row, ["attachments"])
            return _volume_dict(row)

    def get(self, volume_id: str) -> dict[str, Any]:
        with session_scope(self.db_url) as s:
            return _volume_dict(self._volume(s, volume_id))

    def delete(self, volume_id: str) -> None:
        """Delete a volume with no attachments; nothing to do if it is gone already."""
        with session_scope(self.db_url) as s:
            lock_row(s, Volume, volume_id)
            row = s.get(Volume, volume_id)
            if row is None:
                return
            if row.attachments:
                servers = sorted({a.instance_uuid for a in row.attachments})
                raise Conflict(
                    f"Volume {volume_id} cannot be deleted: it has "
                    f"{len(row.attachments)} attachment(s), to server(s) {', '.join(servers)}. "
                    "Detach it first."
                )
            s.delete(row)

    def list(self, project_id: str | None = None) -> list[dict[str, Any]]:
        stmt = select(Volume).order_by(Volume.created_at, Volume.id)
        if project_id is not None:
            stmt = stmt.where(Volume.project_id == project_id)
        with session_scope(self.db_url) as s:
            return [_volume_dict(r) for r in s.scalars(stmt).all()]

    # --- attachments -----------------------------------------------------------------------

    def attachment_create(
        self,
        volume_id: str,
        instance_uuid: str,
        *,
        host: str | None = None,
        connector: dict[str, Any] | None = None,
        attachment_id: str | None = None,
    ) -> dict[str, Any]:
        """Reserve the volume for a server.

        Without a connector the attachment is ``reserved`` (an "empty" attachment,
        as Nova makes before it knows the host); with one it is ``attaching``.
        Idempotent on ``attachment_id``.  Conflict when the volume is attached to
        another server, or when it is being deleted or in error.
        """
        with session_scope(self.db_url) as s:
            volume = self._volume(s, volume_id, lock=True)
            if attachment_id is not None:
                existing = s.get(VolumeAttachment, attachment_id)
                if existing is not None:
                    if (existing.volume_id, existing.instance_uuid) != (volume_id, instance_uuid):
                        raise Conflict(
                            f"Volume attachment {attachment_id} already exists for volume "
                            f"{existing.volume_id} and server {existing.instance_uuid}."
                        )
                    return _attachment_dict(existing)
            if volume.status not in _FOLLOWS_ATTACHMENTS:
                raise Conflict(
                    f"Volume {volume_id} cannot be attached: its status is {volume.status}."
                )
            for other in volume.attachments:
                if other.instance_uuid != instance_uuid:
                    raise Conflict(
                        f"Volume {volume_id} is already {other.status} to server "
                        f"{other.instance_uuid} (attachment {other.id}) and is not multiattach; "
                        f"it cannot be attached to server {instance_uuid}."
                    )
            if connector is not None and host is None:
                host = connector.get("host")
            row = VolumeAttachment(
                id=attachment_id or new_uuid(),
                volume_id=volume_id,
                instance_uuid=instance_uuid,
                host=host,
                connector=dict(connector) if connector is not None else None,
                status="attaching" if connector is not None else "reserved",
                attach_mode="rw",
            )
            s.add(row)
            self._refresh_status(s, volume)
            return _attachment_dict(row)

    def attachment_update(
        self, attachment_id: str, *, host: str, connector: dict[str, Any]
    ) -> dict[str, Any]:
        """Give an attachment its host and connector; a reserved one becomes ``attaching``."""
        if not host:
            raise BadRequest("A host is required to update a volume attachment.")
        if not isinstance(connector, dict):
            raise BadRequest("A connector (a dict) is required to update a volume attachment.")
        volume_id = self._attachment_volume_id(attachment_id)
        with session_scope(self.db_url) as s:
            row = self._locked_attachment(s, volume_id, attachment_id)
            row.host = host
            row.connector = dict(connector)
            if row.status == "reserved":
                row.status = "attaching"
            self._refresh_status(s, self._volume(s, row.volume_id))
            return _attachment_dict(row)

    def attachment_complete(self, attachment_id: str) -> dict[str, Any]:
        """The host has connected the volume: the attachment is ``attached``, the volume in-use.

        Conflict for an attachment that never got a host (update it first).
        """
        volume_id = self._attachment_volume_id(attachment_id)
        with session_scope(self.db_url) as s:
            row = self._locked_attachment(s, volume_id, attachment_id)
            if row.status == "attached":
                return _attachment_dict(row)
            if row.host is None:
                raise Conflict(
                    f"Volume attachment {attachment_id} has no host or connector yet; "
                    "update it with the host's connector before completing it."
                )
            row.status = "attached"
            self._refresh_status(s, self._volume(s, row.volume_id))
            return _attachment_dict(row)

    def attachment_delete(self, attachment_id: str) -> None:
        """Remove an attachment; the volume is available again once none is left. Idempotent."""
        try:
            volume_id = self._attachment_volume_id(attachment_id)
        except NotFound:
            return
        with session_scope(self.db_url) as s:
            try:
                row = self._locked_attachment(s, volume_id, attachment_id)
            except NotFound:
                return
            volume = self._volume(s, row.volume_id)
            s.delete(row)
            self._refresh_status(s, volume)

    def attachments(
        self, *, instance_uuid: str | None = None, volume_id: str | None = None
    ) -> list[dict[str, Any]]:
        stmt = select(VolumeAttachment).order_by(VolumeAttachment.created_at, VolumeAttachment.id)
        if instance_uuid is not None:
            stmt = stmt.where(VolumeAttachment.instance_uuid == instance_uuid)
        if volume_id is not None:
            stmt = stmt.where(VolumeAttachment.volume_id == volume_id)
        with session_scope(self.db_url) as s:
            return [_attachment_dict(r) for r in s.scalars(stmt).all()]

    def all_attachments(self) -> list[dict[str, Any]]:
        """Every attachment of every volume (for the audit)."""
        return self.attachments()


__all__ = ["ATTACHMENT_STATUSES", "VolumeService"]
