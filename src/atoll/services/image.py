"""The embedded image service (stands in for Glance).

Image records live in the services database; each image's bytes live in one file,
``store_dir/<image_id>``.  An image is ``queued`` until its bytes are in, then
``active``; a deleted image keeps its row (status ``deleted``) so that its id is
never reused, and is NotFound for every read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from atoll.db.session import session_scope
from atoll.db.types import new_uuid, utcnow
from atoll.exceptions import BadRequest, Conflict, NotFound
from atoll.services._common import iso, lock_row
from atoll.services.models import Image

DISK_FORMATS = frozenset({"raw", "qcow2", "vmdk", "vdi", "vhd", "vhdx", "iso", "ami", "ari", "aki"})
CONTAINER_FORMATS = frozenset({"bare", "ovf", "ova", "docker", "ami", "ari", "aki", "compressed"})
VISIBILITIES = frozenset({"public", "private", "shared", "community"})

_CHUNK = 1 << 20
_ZEROS = bytes(_CHUNK)


def _to_dict(row: Image) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "disk_format": row.disk_format,
        "container_format": row.container_format,
        "min_disk": row.min_disk,
        "min_ram": row.min_ram,
        "size": row.size,
        "checksum": row.checksum,
        "visibility": row.visibility,
        "owner": row.owner,
        "properties": dict(row.properties or {}),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def _seek(fd: int, pos: int, whence: int | None, fallback: int, size: int) -> int:
    """lseek with SEEK_DATA / SEEK_HOLE, or ``fallback`` where the platform lacks them."""
    if whence is None:
        return fallback
    try:
        return os.lseek(fd, pos, whence)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no data past pos
            return size
        raise


def _copy_and_hash(source: Path, dest: Path | None) -> tuple[int, str]:
    """Read ``source`` once: its size and md5, copied to ``dest`` when given.

    Holes in the source are not read (SEEK_DATA/SEEK_HOLE) and all-zero chunks
    are not written, so a sparse disk stays sparse.  The checksum is an md5 of the
    data with each hole recorded as its offset and length: hashing the zeros of a
    hole byte by byte took ~40 s for the 20 GB root disk of a resized server, so
    the checksum of a sparse image is not the md5 of its flat bytes.
    """
    digest = hashlib.md5(usedforsecurity=False)
    seek_data = getattr(os, "SEEK_DATA", None)
    seek_hole = getattr(os, "SEEK_HOLE", None)
    with open(source, "rb") as src, contextlib.ExitStack() as stack:
        out = stack.enter_context(open(dest, "wb")) if dest is not None else None
        fd = src.fileno()
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                data_at = _seek(fd, pos, seek_data, pos, size)
            except OSError:  # the file system cannot tell: treat all as data
                seek_data = seek_hole = None
                data_at = pos
            if data_at > pos:  # a hole: its extent for the checksum, a seek for the copy
                digest.update(f"<hole {pos}+{data_at - pos}>".encode())
                if out is not None:
                    out.seek(data_at)
                pos = data_at
            if pos >= size:
                break
            try:
                hole_at = _seek(fd, pos, seek_hole, size, size)
            except OSError:
                seek_data = seek_hole = None
                hole_at = size
            src.seek(pos)
            while pos < hole_at:
                chunk = src.read(min(_CHUNK, hole_at - pos))
                if not chunk:  # the file shrank under us
                    hole_at = size = pos
                    break
                digest.update(chunk)
                if out is not None:
                    if chunk == _ZEROS[: len(chunk)]:
                        out.seek(len(chunk), os.SEEK_CUR)
                    else:
                        out.write(chunk)
                pos += len(chunk)
        if out is not None:
            out.truncate(size)  # a trailing hole still counts towards the size
            out.flush()
            os.fsync(out.fileno())
    return size, digest.hexdigest()


class ImageService:
    def __init__(self, db_url: str, store_dir: Path) -> None:
        self.db_url = db_url
        self.store_dir = Path(store_dir)
        self.store_dir.mkdir(parents=True, exist_ok=True)

    # --- helpers ---------------------------------------------------------------------------

    def _path(self, image_id: str) -> Path:
        return self.store_dir / image_id

    @staticmethod
    def _live(session: Any, image_id: str) -> Image:
        row = session.get(Image, image_id)
        if row is None or row.status == "deleted":
            raise NotFound(f"Image {image_id} could not be found.")
        return row

    @staticmethod
    def _validate(disk_format: str, container_format: str, visibility: str) -> None:
        if disk_format not in DISK_FORMATS:
            raise BadRequest(
                f"Invalid disk_format {disk_format!r}; expected one of {sorted(DISK_FORMATS)}."
            )
        if container_format not in CONTAINER_FORMATS:
            raise BadRequest(
                f"Invalid container_format {container_format!r}; "
                f"expected one of {sorted(CONTAINER_FORMATS)}."
            )
        if visibility not in VISIBILITIES:
            raise BadRequest(
                f"Invalid visibility {visibility!r}; expected one of {sorted(VISIBILITIES)}."
            )

    def _insert(self, row: Image) -> dict[str, Any] | None:
        """Insert a new row; None when a row with that id already exists (maybe just now)."""
        try:
            with session_scope(self.db_url) as s:
                if s.get(Image, row.id) is not None:
                    return None
                s.add(row)
                s.flush()
                return _to_dict(row)
        except IntegrityError:
            with session_scope(self.db_url) as s:
                if s.get(Image, row.id) is not None:
                    return None
            raise

    # --- API -------------------------------------------------------------------------------

    def create(
        self,
        name: str,
        *,
        disk_format: str = "raw",
        container_format: str = "bare",
        min_disk: int = 0,
        min_ram: int = 0,
        owner: str | None = None,
        properties: dict[str, Any] | None = None,
        visibility: str = "public",
        image_id: str | None = None,
    ) -> dict[str, Any]:
        """A queued image with no data yet.

        With an ``image_id`` that already names a live image, that image is
        returned unchanged (a retried create does no harm); an id once deleted
        is never reused (Conflict).
        """
        self._validate(disk_format, container_format, visibility)
        if min_disk < 0 or min_ram < 0:
            raise BadRequest("min_disk and min_ram must not be negative.")
        row = Image(
            id=image_id or new_uuid(),
            name=name,
            status="queued",
            disk_format=disk_format,
            container_format=container_format,
            min_disk=min_disk,
            min_ram=min_ram,
            visibility=visibility,
            owner=owner,
            properties=dict(properties or {}),
        )
        created = self._insert(row)
        if created is not None:
            return created
        return self._existing(row.id)

    def _existing(self, image_id: str) -> dict[str, Any]:
        with session_scope(self.db_url) as s:
            existing = s.get(Image, image_id)
            if existing is None:  # pragma: no cover - inserted then gone in between
                raise NotFound(f"Image {image_id} could not be found.")
            if existing.status == "deleted":
                raise Conflict(f"Image id {image_id} belonged to a deleted image; use a new id.")
            return _to_dict(existing)

    def upload(self, image_id: str, source: Path) -> dict[str, Any]:
        """Copy ``source`` in as the image's data; the image becomes active.

        Uploading to an active image is accepted when the content is the same
        (a retried upload) and a Conflict otherwise: images are immutable.
        """
        source = Path(source)
        if not source.is_file():
            raise BadRequest(f"Cannot upload image {image_id}: {source} is not a file.")
        with session_scope(self.db_url) as s:
            row = self._live(s, image_id)
            status = row.status
            checksum = row.checksum
        if status == "active":
            _, md5 = _copy_and_hash(source, None)
            if md5 == checksum:
                return self.get(image_id)
            raise Conflict(f"Image {image_id} is already active; its data cannot be replaced.")

        partial = self.store_dir / f".{image_id}.{new_uuid()}.partial"
        try:
            size, md5 = _copy_and_hash(source, partial)
            with session_scope(self.db_url) as s:
                lock_row(s, Image, image_id)
                row = self._live(s, image_id)
                if row.status == "active":
                    if row.checksum == md5:
                        return _to_dict(row)
                    raise Conflict(
                        f"Image {image_id} became active during the upload; "
                        "its data cannot be replaced."
                    )
                # Move the file in while holding the row: a concurrent delete waits for us
                # and then removes the file it finds.
                os.replace(partial, self._path(image_id))
                row.size, row.checksum, row.status = size, md5, "active"
                row.updated_at = utcnow()
                s.flush()
                return _to_dict(row)
        finally:
            partial.unlink(missing_ok=True)

    def reserve_snapshot(
        self,
        name: str,
        *,
        instance_uuid: str,
        owner: str | None,
        properties: dict[str, Any] | None = None,
        image_id: str | None = None,
        disk_format: str = "raw",
        min_disk: int = 0,
        min_ram: int = 0,
    ) -> tuple[dict[str, Any], Path]:
        """A queued private image for a snapshot of ``instance_uuid`` and the path to write it to.

        Its properties carry ``instance_uuid`` and ``image_type: snapshot``.
        Idempotent on ``image_id``: a retried reservation returns the same image
        and path (Conflict if that id names another server's image or a deleted one).
        """
        props = dict(properties or {})
        props.update(instance_uuid=instance_uuid, image_type="snapshot")
        self._validate(disk_format, "bare", "private")
        row = Image(
            id=image_id or new_uuid(),
            name=name,
            status="queued",
            disk_format=disk_format,
            container_format="bare",
            min_disk=min_disk,
            min_ram=min_ram,
            visibility="private",
            owner=owner,
            properties=props,
        )
        image = self._insert(row)
        if image is None:
            image = self._existing(row.id)
            if image["properties"].get("instance_uuid") != instance_uuid:
                raise Conflict(
                    f"Image {row.id} already exists and is not a snapshot of server "
                    f"{instance_uuid}."
                )
        return image, self._path(image["id"])

    def finalize_snapshot(self, image_id: str) -> dict[str, Any]:
        """After the hypervisor wrote the file: record size and checksum, mark active.

        Idempotent: an active snapshot is returned as it is.
        """
        path = self._path(image_id)
        with session_scope(self.db_url) as s:
            row = self._live(s, image_id)
            if row.status == "active":
                return _to_dict(row)
        if not path.is_file():
            raise Conflict(f"Snapshot {image_id} cannot be finalized: {path} was not written.")
        size, md5 = _copy_and_hash(path, None)
        with session_scope(self.db_url) as s:
            lock_row(s, Image, image_id)
            row = self._live(s, image_id)
            if row.status != "active":
                row.size, row.checksum, row.status = size, md5, "active"
                row.updated_at = utcnow()
                s.flush()
            return _to_dict(row)

    def get(self, image_id: str) -> dict[str, Any]:
        with session_scope(self.db_url) as s:
            return _to_dict(self._live(s, image_id))

    def file_path(self, image_id: str) -> Path:
        """Where the image's data is (or, while queued, will be)."""
        self.get(image_id)
        return self._path(image_id)

    def delete(self, image_id: str) -> None:
        """Remove the data and mark the image deleted; nothing to do if it is gone already."""
        with session_scope(self.db_url) as s:
            lock_row(s, Image, image_id)
            row = s.get(Image, image_id)
            self._path(image_id).unlink(missing_ok=True)
            if row is None or row.status == "deleted":
                return
            row.status = "deleted"
            row.updated_at = utcnow()

    def list_all(self, *, instance_uuid: str | None = None) -> list[dict[str, Any]]:
        """Every image ever made, deleted ones too (operators and the audit follow
        temporary snapshots with it)."""
        with session_scope(self.db_url) as s:
            stmt = select(Image).order_by(Image.created_at)
            rows = [_to_dict(r) for r in s.scalars(stmt)]
        if instance_uuid:
            rows = [
                r for r in rows if (r.get("properties") or {}).get("instance_uuid") == instance_uuid
            ]
        return rows

    def list(
        self, *, owner: str | None = None, properties: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """Images not deleted, optionally of one owner and with these property values."""
        stmt = select(Image).where(Image.status != "deleted")
        if owner is not None:
            stmt = stmt.where(Image.owner == owner)
        stmt = stmt.order_by(Image.created_at, Image.id)
        wanted = dict(properties or {})
        with session_scope(self.db_url) as s:
            rows = s.scalars(stmt).all()
            return [
                _to_dict(r)
                for r in rows
                if all((r.properties or {}).get(k, _MISSING) == v for k, v in wanted.items())
            ]


_MISSING = object()
