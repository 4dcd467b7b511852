"""The simulated hypervisor, on real sparse files in tmp_path."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from atoll import exceptions, faults
from atoll.config import SimSettings
from atoll.virt import SimDriver, VirtDriver, load_driver, power_state

GiB = 1024**3
FLAVOR = {
    "name": "m1.small",
    "memory_mb": 2048,
    "vcpus": 2,
    "root_gb": 1,
    "ephemeral_gb": 0,
    "swap": 0,
}
BIG = {
    "name": "m1.big",
    "memory_mb": 4096,
    "vcpus": 4,
    "root_gb": 2,
    "ephemeral_gb": 1,
    "swap": 512,
}
U1 = "11111111-1111-1111-1111-111111111111"
U2 = "22222222-2222-2222-2222-222222222222"
U3 = "33333333-3333-3333-3333-333333333333"
BOOT_VOLUME = {"volume_id": "vol-root", "boot_index": 0, "tag": None, "attachment_id": "att-1"}


@pytest.fixture(autouse=True)
def _no_faults():
    faults.configure({})
    yield
    faults.configure({})


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "image.raw"
    with open(path, "wb") as fh:
        fh.write(b"BOOTSECTOR" + os.urandom(5000))
        fh.seek(3 * 1024 * 1024)  # a hole in the middle of the image
        fh.write(b"TAIL")
    return path


@pytest.fixture
def driver(tmp_path: Path) -> SimDriver:
    drv = load_driver("sim", "host1", tmp_path / "hosts" / "host1", SimSettings())
    drv.init_host()
    return drv


def spawn_image(drv: VirtDriver, uuid: str, image: Path, flavor: dict = FLAVOR, **kw) -> None:
    drv.spawn(uuid, flavor, image_file=image, block_devices=[], **kw)


def test_load_driver_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown virt driver 'xen'.*sim"):
        load_driver("xen", "h", tmp_path, SimSettings())


def test_image_backed_spawn_writes_a_sparse_disk(driver, image):
    spawn_image(driver, U1, image)
    disk = driver.root_disk_path(U1)
    st = disk.stat()
    assert st.st_size == 1 * GiB
    assert st.st_blocks * 512 < 1024 * 1024  # a few blocks, not a GiB
    with open(disk, "rb") as fh:
        assert fh.read(image.stat().st_size) == image.read_bytes()
        assert fh.read(4096) == bytes(4096)
    assert driver.guest_exists(U1)
    assert driver.list_guests() == [U1]
    assert driver.get_power_state(U1) == power_state.RUNNING
    record = json.loads((disk.parent / "guest.json").read_text())
    assert record["flavor"]["memory_mb"] == 2048


def test_flavor_disks_ephemeral_and_swap(driver, image):
    spawn_image(driver, U1, image, flavor=BIG, power_on=False)
    info = driver.get_info(U1)
    sizes = {d["name"]: d["size"] for d in info["disks"]}
    assert sizes == {"disk": 2 * GiB, "disk.eph0": 1 * GiB, "disk.swap": 512 * 1024**2}
    assert info["power_state"] == power_state.SHUTDOWN
    assert info["flavor"]["vcpus"] == 4


def test_image_larger_than_root_disk_is_refused(driver, tmp_path):
    huge = tmp_path / "huge.raw"
    with open(huge, "wb") as fh:
        fh.truncate(GiB + 1)
    with pytest.raises(exceptions.VirtError, match="does not fit"):
        spawn_image(driver, U1, huge)
    assert not driver.guest_exists(U1)
    assert os.listdir(driver.state_dir) == []


def test_volume_backed_spawn_has_no_local_root_disk(driver):
    driver.spawn(U1, FLAVOR, image_file=None, block_devices=[BOOT_VOLUME])
    info = driver.get_info(U1)
    assert info["volume_backed"] is True
    assert info["disks"] == []
    assert [v["volume_id"] for v in info["volumes"]] == ["vol-root"]
    assert not (driver.state_dir / U1 / "disk").exists()
    with pytest.raises(exceptions.VirtError, match="volume-backed"):
        driver.root_disk_path(U1)
    with pytest.raises(exceptions.VirtError, match="volume-backed"):
        driver.snapshot(U1, driver.state_dir.parent / "snap.raw")


def test_power_off_on_and_reboot(driver, image):
    spawn_image(driver, U1, image)
    driver.power_off(U1)
    assert driver.get_power_state(U1) == power_state.SHUTDOWN
    driver.power_off(U1)  # idempotent
    driver.power_on(U1)
    assert driver.get_power_state(U1) == power_state.RUNNING
    boots = driver.get_info(U1)["boot_count"]
    driver.power_on(U1)  # already running: nothing happens
    assert driver.get_info(U1)["boot_count"] == boots
    driver.reboot(U1, hard=False)
    assert driver.get_info(U1)["boot_count"] == boots + 1
    driver.simulate_power_state(U1, power_state.CRASHED)
    assert driver.get_power_state(U1) == power_state.CRASHED
    driver.reboot(U1, hard=True)
    assert driver.get_power_state(U1) == power_state.RUNNING


def test_operations_on_a_missing_guest(driver):
    assert driver.get_power_state(U1) == power_state.NOSTATE
    assert not driver.guest_exists(U1)
    for call in (driver.power_on, driver.power_off, driver.get_info):
        with pytest.raises(exceptions.GuestNotFound):
            call(U1)
    with pytest.raises(exceptions.GuestNotFound):
        driver.attach_volume(U1, "vol", "att", None)


def test_invalid_uuid_is_refused(driver):
    with pytest.raises(ValueError):
        driver.guest_exists("../etc")


def test_state_survives_a_restart(tmp_path, driver, image):
    spawn_image(driver, U1, image)
    spawn_image(driver, U2, image)
    driver.power_off(U2)
    driver.attach_volume(U1, "vol-a", "att-a", "data")
    driver.destroy(U3)
    again = SimDriver("host1", driver.state_dir, SimSettings())
    again.init_host()
    assert again.list_guests() == [U1, U2]
    assert again.get_power_state(U1) == power_state.RUNNING
    assert again.get_power_state(U2) == power_state.SHUTDOWN
    assert again.get_info(U1)["volumes"] == [
        {"volume_id": "vol-a", "attachment_id": "att-a", "tag": "data", "boot_index": None}
    ]


def test_init_host_removes_litter_of_a_crash(driver, image):
    spawn_image(driver, U1, image)
    (driver.state_dir / f"{U2}.building").mkdir()
    (driver.state_dir / f"{U3}.deleting-abcd").mkdir()
    (driver.state_dir / U3).mkdir()  # disks created, record never written
    (driver.state_dir / U1 / ".guest.json.1.2.tmp").write_text("{")
    driver.init_host()
    assert sorted(os.listdir(driver.state_dir)) == [U1]
    assert sorted(os.listdir(driver.state_dir / U1)) == ["disk", "guest.json"]


def test_keep_disks_then_revert_keeps_content(driver, image):
    spawn_image(driver, U1, image)
    with open(driver.root_disk_path(U1), "r+b") as fh:
        fh.seek(512 * 1024 * 1024)
        fh.write(b"MARKER-written-by-the-guest")
    driver.power_off(U1)
    driver.destroy(U1, keep_disks=True)
    assert not driver.guest_exists(U1)
    assert driver.list_guests() == []
    assert driver.list_kept_disks() == [U1]
    assert driver.get_power_state(U1) == power_state.NOSTATE
    driver.destroy(U1, keep_disks=True)  # a retried step
    assert driver.list_kept_disks() == [U1]

    driver.spawn(
        U1, FLAVOR, image_file=None, block_devices=[], keep_existing_disks=True, power_on=False
    )
    assert driver.list_kept_disks() == []
    assert driver.get_power_state(U1) == power_state.SHUTDOWN
    with open(driver.root_disk_path(U1), "rb") as fh:
        assert fh.read(10) == b"BOOTSECTOR"
        fh.seek(512 * 1024 * 1024)
        assert fh.read(27) == b"MARKER-written-by-the-guest"


def test_keep_existing_disks_without_kept_disks_fails(driver):
    with pytest.raises(exceptions.GuestNotFound, match="kept"):
        driver.spawn(U1, FLAVOR, image_file=None, block_devices=[], keep_existing_disks=True)


def test_kept_disks_and_a_new_guest_of_the_same_server_coexist(driver, image):
    spawn_image(driver, U1, image)
    driver.destroy(U1, keep_disks=True)
    spawn_image(driver, U1, image, flavor=BIG)  # a resize to the same host
    assert driver.list_guests() == [U1]
    assert driver.list_kept_disks() == [U1]
    with pytest.raises(exceptions.VirtError, match="already kept"):
        driver.destroy(U1, keep_disks=True)
    driver.destroy(U1)  # revert: the new guest goes...
    driver.spawn(U1, FLAVOR, image_file=None, block_devices=[], keep_existing_disks=True)
    assert driver.get_info(U1)["flavor"]["name"] == "m1.small"  # ...the old one comes back


def test_delete_kept_disks_is_idempotent(driver, image):
    spawn_image(driver, U1, image)
    driver.destroy(U1, keep_disks=True)
    driver.delete_kept_disks(U1)
    driver.delete_kept_disks(U1)
    assert os.listdir(driver.state_dir) == []


def test_snapshot_copies_byte_for_byte(driver, image, tmp_path):
    tiny = dict(FLAVOR, root_gb=0)  # root_gb 0: the root disk is the image's size
    spawn_image(driver, U1, image, flavor=tiny)
    disk = driver.root_disk_path(U1)
    with open(disk, "r+b") as fh:
        fh.seek(2 * 1024 * 1024)
        fh.write(b"written-by-the-guest")
    dest = tmp_path / "images" / "snap.raw"
    assert driver.snapshot(U1, dest) == disk.stat().st_size == image.stat().st_size
    assert dest.read_bytes() == disk.read_bytes()
    assert [p.name for p in dest.parent.iterdir()] == ["snap.raw"]


def test_snapshot_of_a_large_disk_stays_sparse(driver, image, tmp_path):
    spawn_image(driver, U1, image)
    with open(driver.root_disk_path(U1), "r+b") as fh:
        fh.seek(GiB - 5)
        fh.write(b"LAST!")
    dest = tmp_path / "snap.raw"
    assert driver.snapshot(U1, dest) == GiB == dest.stat().st_size
    assert dest.stat().st_blocks * 512 < 1024 * 1024
    with open(dest, "rb") as fh:
        assert fh.read(image.stat().st_size) == image.read_bytes()
        fh.seek(GiB - 5)
        assert fh.read() == b"LAST!"


def test_snapshot_of_kept_disks(driver, image, tmp_path):
    spawn_image(driver, U1, image)
    driver.destroy(U1, keep_disks=True)
    assert driver.snapshot(U1, tmp_path / "snap.raw") == GiB


def test_spawn_is_idempotent(driver, image):
    spawn_image(driver, U1, image)
    with open(driver.root_disk_path(U1), "r+b") as fh:
        fh.write(b"CHANGED")
    spawn_image(driver, U1, image)  # a retried step: no harm done
    with open(driver.root_disk_path(U1), "rb") as fh:
        assert fh.read(7) == b"CHANGED"
    with pytest.raises(exceptions.VirtError, match="another flavor"):
        spawn_image(driver, U1, image, flavor=BIG)


def test_destroy_is_idempotent(driver, image):
    spawn_image(driver, U1, image)
    driver.destroy(U1)
    driver.destroy(U1)
    assert not driver.guest_exists(U1)
    assert os.listdir(driver.state_dir) == []


def test_attach_and_detach_volumes(driver, image):
    spawn_image(driver, U1, image)
    driver.attach_volume(U1, "vol-a", "att-a", "db")
    driver.attach_volume(U1, "vol-a", "att-b", "db")  # re-attach updates
    driver.attach_volume(U1, "vol-b", "att-c", None)
    vols = {v["volume_id"]: v["attachment_id"] for v in driver.get_info(U1)["volumes"]}
    assert vols == {"vol-a": "att-b", "vol-b": "att-c"}
    driver.detach_volume(U1, "vol-a")
    driver.detach_volume(U1, "vol-a")  # idempotent
    driver.detach_volume(U2, "vol-a")  # no such guest: nothing to detach
    assert [v["volume_id"] for v in driver.get_info(U1)["volumes"]] == ["vol-b"]


def test_revert_takes_volumes_from_the_block_devices(driver):
    driver.spawn(U1, FLAVOR, image_file=None, block_devices=[BOOT_VOLUME])
    driver.attach_volume(U1, "vol-old", "att-9", None)
    driver.destroy(U1, keep_disks=True)
    data = {"volume_id": "vol-new", "boot_index": None, "tag": "t", "attachment_id": "att-5"}
    driver.spawn(
        U1, FLAVOR, image_file=None, block_devices=[BOOT_VOLUME, data], keep_existing_disks=True
    )
    info = driver.get_info(U1)
    assert [v["volume_id"] for v in info["volumes"]] == ["vol-root", "vol-new"]
    assert info["volume_backed"] is True


def test_available_resources_sum_the_guests(driver, image):
    res = driver.get_available_resources()
    assert res == {
        "vcpus": 16,
        "memory_mb": 32768,
        "local_gb": 400,
        "vcpus_used": 0,
        "memory_mb_used": 0,
        "local_gb_used": 0,
        "running_vms": 0,
        "hypervisor_type": "sim",
        "hypervisor_hostname": "host1",
        "hypervisor_version": res["hypervisor_version"],
    }
    spawn_image(driver, U1, image)  # 2 vcpus, 2048 MB, 1 GB
    spawn_image(driver, U2, image, flavor=BIG)  # 4 vcpus, 4096 MB, 2 + 1 + 1 (swap) GB
    driver.spawn(U3, FLAVOR, image_file=None, block_devices=[BOOT_VOLUME], power_on=False)
    res = driver.get_available_resources()
    assert (res["vcpus_used"], res["memory_mb_used"], res["local_gb_used"]) == (8, 8192, 5)
    assert res["running_vms"] == 3
    driver.destroy(U2, keep_disks=True)  # kept disks count in local_gb_used only
    res = driver.get_available_resources()
    assert (res["vcpus_used"], res["memory_mb_used"], res["local_gb_used"]) == (4, 4096, 5)
    assert res["running_vms"] == 2


def test_every_operation_passes_its_fault_point(driver, image):
    faults.configure({"virt.sim.*": "raise:HypervisorUnavailable;host=host1"})
    with pytest.raises(exceptions.HypervisorUnavailable, match="host1"):
        spawn_image(driver, U1, image)
    other = SimDriver("host2", driver.state_dir.parent / "host2", SimSettings())
    spawn_image(other, U1, image)  # the filter spares host2
    faults.configure({})
    spawn_image(driver, U1, image)
    calls = {
        "spawn": lambda: spawn_image(driver, U2, image),
        "destroy": lambda: driver.destroy(U1),
        "power_on": lambda: driver.power_on(U1),
        "power_off": lambda: driver.power_off(U1),
        "reboot": lambda: driver.reboot(U1, hard=True),
        "snapshot": lambda: driver.snapshot(U1, driver.state_dir.parent / "s.raw"),
        "attach_volume": lambda: driver.attach_volume(U1, "v", "a", None),
        "detach_volume": lambda: driver.detach_volume(U1, "v"),
        "delete_kept_disks": lambda: driver.delete_kept_disks(U1),
        "get_available_resources": driver.get_available_resources,
        "list_guests": driver.list_guests,
        "get_power_state": lambda: driver.get_power_state(U1),
    }
    for op, call in calls.items():
        faults.configure({f"virt.sim.{op}": "raise:VirtError:" + op})
        with pytest.raises(exceptions.VirtError, match=op):
            call()
    faults.configure({})
    assert driver.list_guests() == [U1]  # nothing changed by the failed calls


def test_registered_points_have_descriptions():
    points = {p.name: p.description for p in faults.registered()}
    ops = ["spawn", "destroy", "power_on", "power_off", "reboot", "snapshot"]
    for op in [*ops, "attach_volume", "detach_volume"]:
        assert points[f"virt.sim.{op}"]


def test_concurrent_operations_on_one_guest(driver, image):
    spawn_image(driver, U1, image)
    errors = []

    def worker(i: int) -> None:
        try:
            for j in range(10):
                driver.attach_volume(U1, f"vol-{i}-{j}", f"att-{i}-{j}", None)
                driver.power_off(U1) if j % 2 else driver.power_on(U1)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(driver.get_info(U1)["volumes"]) == 80
