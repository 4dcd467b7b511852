"""The simulated hypervisor: guests are folders, disks are real sparse files.

Layout under ``state_dir`` (one per host, e.g. ``<data>/hosts/<host>/``)::

    <uuid>/guest.json          a defined guest: power state, flavor, volumes, ...
    <uuid>/disk                root disk, root_gb GiB, sparse (none if volume-backed)
    <uuid>/disk.eph0           ephemeral disk, if the flavor has one
    <uuid>/disk.swap           swap disk, if the flavor has one
    <uuid>.kept/...            disks kept by destroy(keep_disks=True)

Every change is committed by one atomic rename (``guest.json`` is written to a
temporary file first; a new guest is built in ``<uuid>.building/``; a deleted
folder is renamed to ``*.deleting-*`` before it is removed), so a process
killed at any point leaves either the old state or the new one, plus litter
that :meth:`SimDriver.init_host` removes.  State survives a restart.

Every public operation first passes the fault point ``virt.sim.<operation>``
with ``host`` and ``instance`` as context: ``raise:HypervisorUnavailable`` on
``virt.sim.*`` with ``;host=<h>`` takes a host's hypervisor down.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from atoll import faults
from atoll.exceptions import GuestNotFound, VirtError
from atoll.virt import power_state
from atoll.virt.driver import HostResources, VirtDriver, flavor_resources, local_disk_gb

LOG = logging.getLogger(__name__)

GiB = 1024**3
MiB = 1024**2
HYPERVISOR_VERSION = 1000
_BLOCK = 64 * 1024
_ZERO_BLOCK = bytes(_BLOCK)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_KEPT = ".kept"
_BUILDING = ".building"
_DELETING = ".deleting-"
_RECORD = "guest.json"


def _point(op: str, what: str) -> str:
    return faults.register(f"virt.sim.{op}", f"simulated hypervisor, before {what}")


P_INIT_HOST = _point("init_host", "it prepares the host at service start")
P_LIST_GUESTS = _point("list_guests", "it lists the guests defined on the host")
P_LIST_KEPT = _point("list_kept_disks", "it lists the disks kept for a confirm or revert")
P_GUEST_EXISTS = _point("guest_exists", "it checks whether a guest is defined")
P_SPAWN = _point("spawn", "it creates the disks of a guest and starts it")
P_DESTROY = _point("destroy", "it destroys a guest (deleting or keeping its disks)")
P_DELETE_KEPT = _point("delete_kept_disks", "it deletes the disks kept for a revert")
P_POWER_ON = _point("power_on", "it starts a guest")
P_POWER_OFF = _point("power_off", "it stops a guest")
P_REBOOT = _point("reboot", "it reboots a guest (soft or hard)")
P_POWER_STATE = _point("get_power_state", "it reads a guest's power state")
P_GET_INFO = _point("get_info", "it describes a guest")
P_SNAPSHOT = _point("snapshot", "it copies a guest's root disk into an image file")
P_ATTACH = _point("attach_volume", "it attaches a volume to a guest")
P_DETACH = _point("detach_volume", "it detaches a volume from a guest")
P_RESOURCES = _point("get_available_resources", "it reports the host's capacity and usage")

# One lock per guest, shared by every driver object of the process on the same folder.
_locks_guard = threading.Lock()
_locks: dict[tuple[str, str], threading.RLock] = {}


class SimDriver(VirtDriver):
    """A hypervisor simulated with files; see the module docstring."""

    driver_type = "sim"

    def __init__(self, host: str, state_dir: Path, resources: HostResources) -> None:
        super().__init__(host, Path(state_dir).absolute(), resources)

    # -- host ---------------------------------------------------------------------------------

    def init_host(self) -> None:
        faults.hit(P_INIT_HOST, host=self.host)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        for entry in self.state_dir.iterdir():
            if not entry.is_dir():
                continue
            if _BUILDING in entry.name or _DELETING in entry.name:
                LOG.info("host %s: removing %s left by an interrupted operation", self.host, entry)
                shutil.rmtree(entry, ignore_errors=True)
            elif not (entry / _RECORD).exists():
                LOG.warning("host %s: removing %s, a guest folder with no record", self.host, entry)
                shutil.rmtree(entry, ignore_errors=True)
            else:
                for tmp in entry.glob(".*.tmp"):
                    tmp.unlink(missing_ok=True)

    def list_guests(self) -> list[str]:
        faults.hit(P_LIST_GUESTS, host=self.host)
        return [name for name, _ in self._records(kept=False)]

    def list_kept_disks(self) -> list[str]:
        faults.hit(P_LIST_KEPT, host=self.host)
        return [name for name, _ in self._records(kept=True)]

    def guest_exists(self, instance_uuid: str) -> bool:
        faults.hit(P_GUEST_EXISTS, host=self.host, instance=instance_uuid)
        return self._read(self._guest_dir(instance_uuid)) is not None

    def get_available_resources(self) -> dict:
        faults.hit(P_RESOURCES, host=self.host)
        vcpus_used = memory_mb_used = local_gb_used = running = 0
        for _, record in self._records(kept=False):
            flavor = flavor_resources(record["flavor"])
            vcpus_used += flavor["vcpus"]
            memory_mb_used += flavor["memory_mb"]
            local_gb_used += local_disk_gb(record["flavor"], record["volume_backed"])
            running += 1
        for _, record in self._records(kept=True):
            local_gb_used += local_disk_gb(record["flavor"], record["volume_backed"])
        return {
            "vcpus": int(self.resources.vcpus),
            "memory_mb": int(self.resources.memory_mb),
            "local_gb": int(self.resources.local_gb),
            "vcpus_used": vcpus_used,
            "memory_mb_used": memory_mb_used,
            "local_gb_used": local_gb_used,
            "running_vms": running,  # as in Nova: guests defined on the host
            "hypervisor_type": "sim",
            "hypervisor_hostname": self.host,
            "hypervisor_version": HYPERVISOR_VERSION,
        }

    # -- life cycle ---------------------------------------------------------------------------

    def spawn(
        self,
        instance_uuid: str,
        flavor: dict,
        *,
        image_file: Path | None,
        block_devices: list[dict],
        power_on: bool = True,
        keep_existing_disks: bool = False,
    ) -> None:
        faults.hit(P_SPAWN, host=self.host, instance=instance_uuid)
        guest_dir = self._guest_dir(instance_uuid)
        with self._lock(instance_uuid):
            existing = self._read(guest_dir)
            if existing is not None:
                if flavor_resources(existing["flavor"]) == flavor_resources(flavor):
                    LOG.debug("host %s: guest %s already spawned", self.host, instance_uuid)
                    return
                raise VirtError(
                    f"A guest for {instance_uuid} already exists on host {self.host} "
                    "with another flavor"
                )
            if guest_dir.exists():  # a folder with no record: litter of a crash
                self._remove(guest_dir)
            volumes = [_volume(bdm) for bdm in block_devices]
            state = power_state.RUNNING if power_on else power_state.SHUTDOWN
            self.state_dir.mkdir(parents=True, exist_ok=True)
            if keep_existing_disks:
                self._respawn_kept(instance_uuid, flavor, volumes, state)
            else:
                self._build(instance_uuid, flavor, image_file, volumes, state)
        LOG.info(
            "host %s: spawned guest %s (%s)", self.host, instance_uuid, power_state.name(state)
        )

    def destroy(self, instance_uuid: str, *, keep_disks: bool = False) -> None:
        faults.hit(P_DESTROY, host=self.host, instance=instance_uuid)
        guest_dir = self._guest_dir(instance_uuid)
        with self._lock(instance_uuid):
            record = self._read(guest_dir)
            if record is None:
                if guest_dir.exists():
                    self._remove(guest_dir)
                return
            if not keep_disks:
                self._remove(guest_dir)
                LOG.info("host %s: destroyed guest %s", self.host, instance_uuid)
                return
            kept_dir = self._kept_dir(instance_uuid)
            if kept_dir.exists():
                raise VirtError(
                    f"Disks of {instance_uuid} are already kept on host {self.host}; "
                    "confirm or revert the earlier move first"
                )
            if "kept_at" not in record:  # not a retry after a crash before the rename
                record["last_power_state"] = record["power_state"]
            record["power_state"] = power_state.NOSTATE
            record["kept_at"] = _now()
            _write_record(guest_dir, record)
            os.replace(guest_dir, kept_dir)
            LOG.info("host %s: destroyed guest %s, disks kept", self.host, instance_uuid)

    def delete_kept_disks(self, instance_uuid: str) -> None:
        faults.hit(P_DELETE_KEPT, host=self.host, instance=instance_uuid)
        kept_dir = self._kept_dir(instance_uuid)
        with self._lock(instance_uuid):
            if kept_dir.exists():
                self._remove(kept_dir)
                LOG.info("host %s: deleted kept disks of %s", self.host, instance_uuid)

    # -- power --------------------------------------------------------------------------------

    def power_on(self, instance_uuid: str) -> None:
        faults.hit(P_POWER_ON, host=self.host, instance=instance_uuid)

        def start(record: dict) -> None:
            if record["power_state"] != power_state.RUNNING:
                _boot(record)

        self._update(instance_uuid, start)

    def power_off(self, instance_uuid: str) -> None:
        faults.hit(P_POWER_OFF, host=self.host, instance=instance_uuid)

        def stop(record: dict) -> None:
            record["power_state"] = power_state.SHUTDOWN

        self._update(instance_uuid, stop)

    def reboot(self, instance_uuid: str, hard: bool) -> None:
        faults.hit(P_REBOOT, host=self.host, instance=instance_uuid, hard=hard)
        self._update(instance_uuid, _boot)

    def simulate_power_state(self, instance_uuid: str, state: int) -> None:
        """Sim only: change a guest's power state behind atoll's back (crash, shutdown)."""
        if state not in power_state.STATE_MAP:
            raise ValueError(f"unknown power state {state}")

        def change(record: dict) -> None:
            record["power_state"] = state

        self._update(instance_uuid, change)

    def get_power_state(self, instance_uuid: str) -> int:
        faults.hit(P_POWER_STATE, host=self.host, instance=instance_uuid)
        record = self._read(self._guest_dir(instance_uuid))
        return power_state.NOSTATE if record is None else int(record["power_state"])

    # -- inspection, disks, volumes -----------------------------------------------------------

    def get_info(self, instance_uuid: str) -> dict:
        faults.hit(P_GET_INFO, host=self.host, instance=instance_uuid)
        guest_dir = self._guest_dir(instance_uuid)
        with self._lock(instance_uuid):
            record = self._require(instance_uuid)
            disks = []
            for name in record["disks"]:
                st = (guest_dir / name).stat()
                disks.append(
                    {
                        "name": name,
                        "path": str(guest_dir / name),
                        "size": st.st_size,
                        "allocated": st.st_blocks * 512,
                    }
                )
        return {
            "uuid": instance_uuid,
            "power_state": int(record["power_state"]),
            "power_state_name": power_state.name(record["power_state"]),
            "flavor": record["flavor"],
            "volume_backed": record["volume_backed"],
            "disks": disks,
            "volumes": record["volumes"],
            "created_at": record["created_at"],
            "boot_count": record["boot_count"],
        }

    def root_disk_path(self, instance_uuid: str) -> Path:
        for folder in (self._guest_dir(instance_uuid), self._kept_dir(instance_uuid)):
            record = self._read(folder)
            if record is None:
                continue
            if record["volume_backed"]:
                raise VirtError(f"Server {instance_uuid} is volume-backed: no local root disk")
            return folder / "disk"
        raise GuestNotFound(f"No guest or kept disks for {instance_uuid} on host {self.host}")

    def snapshot(self, instance_uuid: str, dest: Path) -> int:
        faults.hit(P_SNAPSHOT, host=self.host, instance=instance_uuid)
        dest = Path(dest)
        with self._lock(instance_uuid):
            source = self.root_disk_path(instance_uuid)
            dest.parent.mkdir(parents=True, exist_ok=True)
            part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
            try:
                size = source.stat().st_size
                with open(source, "rb") as src, open(part, "wb") as dst:
                    dst.truncate(size)
                    _copy_sparse(src.fileno(), dst.fileno(), size)
                os.replace(part, dest)
            finally:
                part.unlink(missing_ok=True)
        LOG.info("host %s: snapshot of %s written to %s", self.host, instance_uuid, dest)
        return size

    def attach_volume(
        self, instance_uuid: str, volume_id: str, attachment_id: str, tag: str | None
    ) -> None:
        faults.hit(P_ATTACH, host=self.host, instance=instance_uuid, volume=volume_id)

        def attach(record: dict) -> None:
            volumes = record["volumes"]
            entry = next((v for v in volumes if v["volume_id"] == volume_id), None)
            if entry is None:
                entry = {"volume_id": volume_id, "boot_index": None}
                volumes.append(entry)
            entry.update(attachment_id=attachment_id, tag=tag)

        self._update(instance_uuid, attach)

    def detach_volume(self, instance_uuid: str, volume_id: str) -> None:
        faults.hit(P_DETACH, host=self.host, instance=instance_uuid, volume=volume_id)
        guest_dir = self._guest_dir(instance_uuid)
        with self._lock(instance_uuid):
            record = self._read(guest_dir)
            if record is None:
                return
            remaining = [v for v in record["volumes"] if v["volume_id"] != volume_id]
            if len(remaining) != len(record["volumes"]):
                record["volumes"] = remaining
                _write_record(guest_dir, record)

    # -- internals ----------------------------------------------------------------------------

    def _build(
        self,
        instance_uuid: str,
        flavor: dict,
        image_file: Path | None,
        volumes: list[dict],
        state: int,
    ) -> None:
        """Create a new guest in <uuid>.building/, then rename it into place."""
        resources = flavor_resources(flavor)
        volume_backed = any(v["boot_index"] == 0 for v in volumes)
        building = self.state_dir / f"{instance_uuid}{_BUILDING}"
        if building.exists():
            shutil.rmtree(building)
        building.mkdir()
        try:
            disks: list[str] = []
            if not volume_backed:
                image_size = Path(image_file).stat().st_size if image_file else 0
                size = resources["root_gb"] * GiB or image_size  # root_gb 0: the image's size
                if image_size > size:
                    raise VirtError(
                        f"Image of {image_size} bytes does not fit a root disk of "
                        f"{resources['root_gb']} GiB"
                    )
                with open(building / "disk", "wb") as disk:
                    disk.truncate(size)
                    if image_file:
                        with open(image_file, "rb") as image:
                            _copy_sparse(image.fileno(), disk.fileno(), image_size)
                disks.append("disk")
            disks += _make_extra_disks(building, resources)
            record = {
                "uuid": instance_uuid,
                "host": self.host,
                "power_state": power_state.SHUTDOWN,
                "flavor": dict(flavor),
                "volume_backed": volume_backed,
                "disks": disks,
                "volumes": volumes,
                "created_at": _now(),
                "boot_count": 0,
            }
            if state == power_state.RUNNING:
                _boot(record)
            _write_record(building, record)
            os.replace(building, self._guest_dir(instance_uuid))
        except BaseException:
            shutil.rmtree(building, ignore_errors=True)
            raise

    def _respawn_kept(
        self, instance_uuid: str, flavor: dict, volumes: list[dict], state: int
    ) -> None:
        """Re-define a guest on its kept disks (growing them if the flavor needs it)."""
        kept_dir = self._kept_dir(instance_uuid)
        record = self._read(kept_dir)
        if record is None:
            raise GuestNotFound(f"No kept disks for {instance_uuid} on host {self.host}")
        resources = flavor_resources(flavor)
        root = kept_dir / "disk"
        if not record["volume_backed"] and root.stat().st_size < resources["root_gb"] * GiB:
            os.truncate(root, resources["root_gb"] * GiB)
        extra = _make_extra_disks(kept_dir, resources)
        record["disks"] = [d for d in record["disks"] if d not in extra] + extra
        record.update(flavor=dict(flavor), volumes=volumes, power_state=power_state.SHUTDOWN)
        for key in ("kept_at", "last_power_state"):
            record.pop(key, None)
        if state == power_state.RUNNING:
            _boot(record)
        _write_record(kept_dir, record)
        os.replace(kept_dir, self._guest_dir(instance_uuid))

    def _update(self, instance_uuid: str, change: Callable[[dict], None]) -> None:
        with self._lock(instance_uuid):
            record = self._require(instance_uuid)
            change(record)
            _write_record(self._guest_dir(instance_uuid), record)

    def _require(self, instance_uuid: str) -> dict:
        record = self._read(self._guest_dir(instance_uuid))
        if record is None:
            raise GuestNotFound(f"No guest for {instance_uuid} on host {self.host}")
        return record

    def _records(self, kept: bool) -> Iterator[tuple[str, dict]]:
        try:
            names = sorted(os.listdir(self.state_dir))
        except FileNotFoundError:
            return
        for name in names:
            uuid = name.removesuffix(_KEPT) if kept else name
            if (name == uuid) == kept or not _NAME.match(uuid):
                continue
            record = self._read(self.state_dir / name)
            if record is not None:
                yield uuid, record

    def _guest_dir(self, instance_uuid: str) -> Path:
        return self.state_dir / _checked(instance_uuid)

    def _kept_dir(self, instance_uuid: str) -> Path:
        return self.state_dir / f"{_checked(instance_uuid)}{_KEPT}"

    def _lock(self, instance_uuid: str) -> threading.RLock:
        key = (str(self.state_dir), instance_uuid)
        with _locks_guard:
            return _locks.setdefault(key, threading.RLock())

    @staticmethod
    def _read(folder: Path) -> dict | None:
        try:
            with open(folder / _RECORD, encoding="utf-8") as fh:
                return json.load(fh)
        except (FileNotFoundError, NotADirectoryError):
            return None

    @staticmethod
    def _remove(folder: Path) -> None:
        """Delete a folder; the rename first makes the deletion atomic."""
        tomb = folder.with_name(f"{folder.name}{_DELETING}{uuidlib.uuid4().hex[:8]}")
        os.replace(folder, tomb)
        shutil.rmtree(tomb, ignore_errors=True)


def _checked(instance_uuid: str) -> str:
    if not isinstance(instance_uuid, str) or not _NAME.match(instance_uuid):
        raise ValueError(f"invalid instance uuid {instance_uuid!r}")
    return instance_uuid


def _volume(bdm: dict) -> dict[str, Any]:
    boot_index = bdm.get("boot_index")
    return {
        "volume_id": bdm["volume_id"],
        "attachment_id": bdm.get("attachment_id"),
        "tag": bdm.get("tag"),
        "boot_index": None if boot_index is None else int(boot_index),
    }


def _make_extra_disks(folder: Path, resources: dict[str, int]) -> list[str]:
    """Create (if missing) the ephemeral and swap disks a flavor asks for."""
    made = []
    for name, size in (
        ("disk.eph0", resources["ephemeral_gb"] * GiB),
        ("disk.swap", resources["swap"] * MiB),
    ):
        if size > 0:
            path = folder / name
            if not path.exists():
                with open(path, "wb") as fh:
                    fh.truncate(size)
            made.append(name)
    return made


def _boot(record: dict) -> None:
    record["power_state"] = power_state.RUNNING
    record["boot_count"] = int(record.get("boot_count", 0)) + 1
    record["booted_at"] = _now()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _write_record(folder: Path, record: dict) -> None:
    """Write guest.json atomically: a temporary file, then a rename over the old one."""
    tmp = folder / f".{_RECORD}.{os.getpid()}.{threading.get_ident()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(record, fh, indent=1, sort_keys=True, default=str)
    os.replace(tmp, folder / _RECORD)


def _data_extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """(start, end) of the regions of a file that may hold data; holes are skipped."""
    try:
        start = os.lseek(fd, 0, os.SEEK_DATA)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # nothing but a hole
            return
        yield 0, size  # the file system cannot tell: read everything
        return
    while start < size:
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        yield start, end
        try:
            start = os.lseek(fd, end, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            raise


def _copy_sparse(src_fd: int, dst_fd: int, size: int) -> None:
    """Copy ``size`` bytes from the start of src into dst, writing only non-zero blocks.

    dst must already be at least ``size`` bytes long (made by truncate), so the
    blocks not written read as zeros and take no space.
    """
    for start, end in _data_extents(src_fd, size):
        offset = start
        while offset < end:
            block = os.pread(src_fd, min(_BLOCK, end - offset), offset)
            if not block:
                break
            if block != _ZERO_BLOCK[: len(block)]:
                os.pwrite(dst_fd, block, offset)
            offset += len(block)
