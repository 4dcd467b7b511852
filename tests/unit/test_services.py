"""The embedded image, volume and network services, on real databases (no mocks).

Every test runs on a fresh SQLite file; the ones taking ``any_db`` also run on a
fresh PostgreSQL and a fresh MariaDB database, created and dropped here.  Those
fail (they do not skip) when the server is down.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from atoll.db.session import get_engine
from atoll.exceptions import BadRequest, Conflict, NotFound
from atoll.services import UNSET, ImageService, NetworkService, ServicesBase, VolumeService

SERVERS = {
    "postgres": "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
    "mysql": "mysql+pymysql://root@127.0.0.1:3306/",
}
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


# --- databases ------------------------------------------------------------------------------


def _sqlite_db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'services.sqlite'}"
    ServicesBase.metadata.create_all(get_engine(url))
    return url


@contextmanager
def _server_db(kind: str) -> Iterator[str]:
    """A fresh database on the PostgreSQL or MariaDB server, dropped afterwards."""
    name = f"atoll_svc_{uuid.uuid4().hex[:12]}"
    admin = create_engine(SERVERS[kind], isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        url = make_url(SERVERS[kind]).set(database=name).render_as_string(hide_password=False)
        try:
            ServicesBase.metadata.create_all(get_engine(url))
            yield url
        finally:
            get_engine(url).dispose()
            force = " WITH (FORCE)" if kind == "postgres" else ""
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name}{force}"))
    finally:
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return _sqlite_db(tmp_path)


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def any_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield _sqlite_db(tmp_path)
    else:
        with _server_db(request.param) as url:
            yield url


@pytest.fixture
def images(sqlite_url: str, tmp_path: Path) -> ImageService:
    return ImageService(sqlite_url, tmp_path / "images")


@pytest.fixture
def volumes(sqlite_url: str) -> VolumeService:
    return VolumeService(sqlite_url)


@pytest.fixture
def networks(sqlite_url: str) -> NetworkService:
    return NetworkService(sqlite_url)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- image ----------------------------------------------------------------------------------


def test_image_create_upload_get(images: ImageService, tmp_path: Path) -> None:
    img = images.create("cirros", disk_format="qcow2", min_disk=1, min_ram=64, owner="p1")
    assert img["status"] == "queued"
    assert (img["size"], img["checksum"]) == (None, None)
    assert img["disk_format"] == "qcow2" and img["container_format"] == "bare"
    assert (img["min_disk"], img["min_ram"], img["owner"]) == (1, 64, "p1")
    assert img["visibility"] == "public" and img["properties"] == {}
    assert ISO.match(img["created_at"]) and ISO.match(img["updated_at"])

    data = b"disk image bytes\n" * 5000
    up = images.upload(img["id"], _write(tmp_path / "src.img", data))
    assert up["status"] == "active"
    assert up["size"] == len(data)
    assert up["checksum"] == _md5(data)
    assert images.get(img["id"]) == up
    path = images.file_path(img["id"])
    assert path == tmp_path / "images" / img["id"]
    assert path.read_bytes() == data
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]


def test_image_upload_keeps_sparse_file_sparse(images: ImageService, tmp_path: Path) -> None:
    src = tmp_path / "sparse.img"
    size = 64 << 20
    with open(src, "wb") as f:
        f.truncate(size)
        f.seek(10 << 20)
        f.write(b"boot sector")
        f.seek((40 << 20) + 7)
        f.write(b"x" * 5000)
    data = src.read_bytes()
    img = images.create("sparse")
    up = images.upload(img["id"], src)
    assert up["size"] == size
    # holes are hashed as their extents, not as zeros: stable for the same
    # content, different as soon as one byte differs
    again = images.upload(images.create("sparse-again")["id"], src)
    assert again["checksum"] == up["checksum"] != _md5(data)
    with open(src, "r+b") as f:
        f.seek(10 << 20)
        f.write(b"B")
    changed = images.upload(images.create("sparse-changed")["id"], src)
    assert changed["checksum"] != up["checksum"]
    dest = images.file_path(img["id"])
    assert dest.read_bytes() == data
    assert dest.stat().st_blocks * 512 < size // 8  # holes were not written


def test_image_upload_retry_and_immutability(images: ImageService, tmp_path: Path) -> None:
    img = images.create("img")
    src = _write(tmp_path / "a", b"a" * 1000)
    first = images.upload(img["id"], src)
    assert images.upload(img["id"], src) == first  # a retried upload is harmless
    with pytest.raises(Conflict, match="already active"):
        images.upload(img["id"], _write(tmp_path / "b", b"b" * 1000))
    with pytest.raises(BadRequest):
        images.upload(img["id"], tmp_path / "missing")
    with pytest.raises(NotFound):
        images.upload(str(uuid.uuid4()), src)


def test_image_create_validation_and_idempotent_id(images: ImageService) -> None:
    with pytest.raises(BadRequest, match="disk_format"):
        images.create("x", disk_format="floppy")
    with pytest.raises(BadRequest, match="visibility"):
        images.create("x", visibility="everyone")
    iid = str(uuid.uuid4())
    a = images.create("x", image_id=iid, properties={"os": "linux"})
    b = images.create("other name", image_id=iid)
    assert a == b and b["name"] == "x"


def test_image_list_by_owner_and_properties(images: ImageService) -> None:
    a = images.create("a", owner="p1", properties={"os": "linux", "arch": "x86_64"})
    b = images.create("b", owner="p1", properties={"os": "windows"})
    c = images.create("c", owner="p2", properties={"os": "linux", "arch": "aarch64"})
    d = images.create("d", owner="p2", properties={"os": "linux"})
    images.delete(d["id"])

    def ids(**kw: Any) -> set[str]:
        return {i["id"] for i in images.list(**kw)}

    assert ids() == {a["id"], b["id"], c["id"]}
    assert ids(owner="p1") == {a["id"], b["id"]}
    assert ids(properties={"os": "linux"}) == {a["id"], c["id"]}
    assert ids(properties={"os": "linux", "arch": "x86_64"}) == {a["id"]}
    assert ids(owner="p2", properties={"os": "linux"}) == {c["id"]}
    assert ids(properties={"nope": None}) == set()


def test_image_delete_is_idempotent(images: ImageService, tmp_path: Path) -> None:
    img = images.create("img")
    images.upload(img["id"], _write(tmp_path / "a", b"data"))
    path = images.file_path(img["id"])
    images.delete(img["id"])
    assert not path.exists()
    with pytest.raises(NotFound):
        images.get(img["id"])
    with pytest.raises(NotFound):
        images.file_path(img["id"])
    images.delete(img["id"])  # again: nothing to do
    images.delete(str(uuid.uuid4()))  # never existed: nothing to do
    with pytest.raises(Conflict, match="deleted"):
        images.create("again", image_id=img["id"])
    with pytest.raises(NotFound):
        images.upload(img["id"], tmp_path / "a")
    assert images.list() == []


def test_snapshot_reserve_and_finalize(any_db: str, tmp_path: Path) -> None:
    images = ImageService(any_db, tmp_path / "store")
    server = str(uuid.uuid4())
    sid = str(uuid.uuid4())
    img, path = images.reserve_snapshot(
        "snap-of-vm1",
        instance_uuid=server,
        owner="p1",
        properties={"atoll_temporary": "move-42"},
        image_id=sid,
    )
    assert img["id"] == sid and img["status"] == "queued"
    assert img["visibility"] == "private" and img["owner"] == "p1"
    assert img["properties"] == {
        "atoll_temporary": "move-42",
        "instance_uuid": server,
        "image_type": "snapshot",
    }
    assert path == tmp_path / "store" / sid

    again, again_path = images.reserve_snapshot(
        "snap-of-vm1", instance_uuid=server, owner="p1", image_id=sid
    )
    assert (again, again_path) == (img, path)
    with pytest.raises(Conflict, match="not a snapshot of server"):
        images.reserve_snapshot("x", instance_uuid=str(uuid.uuid4()), owner="p1", image_id=sid)
    with pytest.raises(Conflict, match="was not written"):
        images.finalize_snapshot(sid)

    content = bytes(range(256)) * 4096 + b"\0" * 100000 + b"tail"
    path.write_bytes(content)  # what the hypervisor does
    done = images.finalize_snapshot(sid)
    assert done["status"] == "active"
    assert done["size"] == len(content)
    assert done["checksum"] == _md5(content)
    assert images.finalize_snapshot(sid) == done  # idempotent
    assert images.file_path(sid).read_bytes() == content
    assert [i["id"] for i in images.list(properties={"instance_uuid": server})] == [sid]

    images.delete(sid)
    assert not path.exists()
    assert images.list(properties={"instance_uuid": server}) == []


def test_snapshot_without_id_gets_a_new_one(images: ImageService) -> None:
    a, pa = images.reserve_snapshot("s", instance_uuid="vm", owner=None)
    b, pb = images.reserve_snapshot("s", instance_uuid="vm", owner=None)
    assert a["id"] != b["id"] and pa != pb


# --- volume ---------------------------------------------------------------------------------


def test_volume_attachment_lifecycle(any_db: str) -> None:
    volumes = VolumeService(any_db)
    vol = volumes.create(10, name="data", project_id="p1")
    assert vol["status"] == "available" and vol["attachments"] == []
    assert (vol["size"], vol["name"], vol["bootable"], vol["image_id"]) == (10, "data", False, None)
    assert ISO.match(vol["created_at"])
    server = str(uuid.uuid4())

    att = volumes.attachment_create(vol["id"], server)  # an "empty" attachment
    assert att["status"] == "reserved" and att["host"] is None and att["connector"] is None
    assert att["attach_mode"] == "rw" and att["connection_info"] is None
    assert volumes.get(vol["id"])["status"] == "reserved"

    connector = {"host": "cmp1", "initiator": "iqn.2026-11.org.atoll:cmp1"}
    att = volumes.attachment_update(att["id"], host="cmp1", connector=connector)
    assert att["status"] == "attaching" and att["host"] == "cmp1"
    assert att["connector"] == connector
    assert att["connection_info"]["data"]["volume_id"] == vol["id"]
    assert volumes.get(vol["id"])["status"] == "attaching"

    att = volumes.attachment_complete(att["id"])
    assert att["status"] == "attached"
    assert volumes.attachment_complete(att["id"]) == att  # idempotent
    got = volumes.get(vol["id"])
    assert got["status"] == "in-use"
    assert got["attachments"] == [att]
    assert volumes.attachments(instance_uuid=server) == [att]
    assert volumes.all_attachments() == [att]

    volumes.attachment_delete(att["id"])
    volumes.attachment_delete(att["id"])  # idempotent
    got = volumes.get(vol["id"])
    assert got["status"] == "available" and got["attachments"] == []
    volumes.delete(vol["id"])
    volumes.delete(vol["id"])  # idempotent
    with pytest.raises(NotFound):
        volumes.get(vol["id"])


def test_attachment_create_with_connector_is_attaching(volumes: VolumeService) -> None:
    vol = volumes.create(1, project_id="p1")
    att = volumes.attachment_create(vol["id"], "vm1", connector={"host": "cmp2"})
    assert att["status"] == "attaching" and att["host"] == "cmp2"
    assert volumes.get(vol["id"])["status"] == "attaching"
    assert volumes.attachment_complete(att["id"])["status"] == "attached"


def test_attachment_create_is_idempotent_on_id(volumes: VolumeService) -> None:
    vol = volumes.create(1, project_id="p1")
    aid = str(uuid.uuid4())
    a = volumes.attachment_create(vol["id"], "vm1", attachment_id=aid)
    b = volumes.attachment_create(vol["id"], "vm1", attachment_id=aid)
    assert a == b and a["id"] == aid
    assert len(volumes.attachments(volume_id=vol["id"])) == 1
    other = volumes.create(1, project_id="p1")
    with pytest.raises(Conflict, match=aid):
        volumes.attachment_create(other["id"], "vm1", attachment_id=aid)


def test_move_holds_two_attachments_for_one_server(volumes: VolumeService) -> None:
    vol = volumes.create(5, project_id="p1")
    src = volumes.attachment_create(vol["id"], "vm1", host="src", connector={"host": "src"})
    volumes.attachment_complete(src["id"])

    dst = volumes.attachment_create(vol["id"], "vm1")  # prepared at the destination
    got = volumes.get(vol["id"])
    assert got["status"] == "in-use"
    assert [a["id"] for a in got["attachments"]] == [src["id"], dst["id"]]

    volumes.attachment_update(dst["id"], host="dst", connector={"host": "dst"})
    assert volumes.get(vol["id"])["status"] == "in-use"
    volumes.attachment_complete(dst["id"])
    volumes.attachment_delete(src["id"])  # confirm drops the source's
    got = volumes.get(vol["id"])
    assert got["status"] == "in-use"
    assert [(a["id"], a["host"]) for a in got["attachments"]] == [(dst["id"], "dst")]

    # A revert instead: the destination's goes and the source's stays.
    dst2 = volumes.attachment_create(vol["id"], "vm1")
    volumes.attachment_delete(dst2["id"])
    assert volumes.get(vol["id"])["status"] == "in-use"


def test_attaching_to_another_server_is_a_conflict(volumes: VolumeService) -> None:
    vol = volumes.create(1, project_id="p1")
    att = volumes.attachment_create(vol["id"], "vm1")
    with pytest.raises(Conflict, match=r"already reserved to server vm1.*not multiattach"):
        volumes.attachment_create(vol["id"], "vm2")
    volumes.attachment_update(att["id"], host="h", connector={"host": "h"})
    volumes.attachment_complete(att["id"])
    with pytest.raises(Conflict, match="already attached to server vm1"):
        volumes.attachment_create(vol["id"], "vm2")
    volumes.attachment_delete(att["id"])
    assert volumes.attachment_create(vol["id"], "vm2")["instance_uuid"] == "vm2"


def test_volume_delete_refused_while_attached(volumes: VolumeService) -> None:
    vol = volumes.create(1, project_id="p1")
    att = volumes.attachment_create(vol["id"], "vm1", connector={"host": "h"})
    volumes.attachment_complete(att["id"])
    with pytest.raises(Conflict, match=r"1 attachment.*vm1"):
        volumes.delete(vol["id"])
    assert volumes.get(vol["id"])["status"] == "in-use"
    volumes.attachment_delete(att["id"])
    volumes.delete(vol["id"])
    assert volumes.list() == []


def test_volume_errors_and_listing(volumes: VolumeService) -> None:
    with pytest.raises(BadRequest):
        volumes.create(0, project_id="p1")
    with pytest.raises(NotFound):
        volumes.attachment_create(str(uuid.uuid4()), "vm1")
    with pytest.raises(NotFound):
        volumes.attachment_update(str(uuid.uuid4()), host="h", connector={})
    with pytest.raises(NotFound):
        volumes.attachment_complete(str(uuid.uuid4()))
    volumes.attachment_delete(str(uuid.uuid4()))  # nothing to do
    a = volumes.create(1, project_id="p1", bootable=True, image_id="img")
    b = volumes.create(2, project_id="p2")
    assert a["bootable"] is True and a["image_id"] == "img"
    assert [v["id"] for v in volumes.list()] == [a["id"], b["id"]]
    assert [v["id"] for v in volumes.list(project_id="p2")] == [b["id"]]
    vid = str(uuid.uuid4())
    assert volumes.create(3, project_id="p1", volume_id=vid) == volumes.create(
        3, project_id="p1", volume_id=vid
    )
    att = volumes.attachment_create(a["id"], "vm1")
    with pytest.raises(Conflict, match="update it"):
        volumes.attachment_complete(att["id"])
    volumes.attachment_create(b["id"], "vm2")
    assert {x["volume_id"] for x in volumes.attachments(instance_uuid="vm2")} == {b["id"]}
    assert len(volumes.all_attachments()) == 2


def test_concurrent_attach_has_one_winner(any_db: str) -> None:
    volumes = VolumeService(any_db)
    vol = volumes.create(1, project_id="p1")

    def attach(i: int) -> str:
        try:
            volumes.attachment_create(vol["id"], f"vm{i}")
            return "ok"
        except Conflict:
            return "conflict"

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(attach, range(8)))
    assert sorted(results) == ["conflict"] * 7 + ["ok"]
    assert len(volumes.get(vol["id"])["attachments"]) == 1


# --- network --------------------------------------------------------------------------------


def test_network_create_get_list(any_db: str) -> None:
    networks = NetworkService(any_db)
    net = networks.create_network("public", "10.0.0.0/24")
    assert (net["name"], net["cidr"], net["shared"], net["mtu"]) == (
        "public",
        "10.0.0.0/24",
        True,
        1500,
    )
    assert net["gateway_ip"] == "10.0.0.1" and net["project_id"] is None
    assert ISO.match(net["created_at"])
    assert networks.get_network(net["id"]) == net
    nid = str(uuid.uuid4())
    priv = networks.create_network(
        "priv", "192.168.0.0/28", project_id="p1", shared=False, network_id=nid
    )
    assert networks.create_network("other", "172.16.0.0/24", network_id=nid) == priv
    assert [n["id"] for n in networks.list_networks()] == [net["id"], nid]
    assert [n["id"] for n in networks.list_networks(project_id="p2")] == [net["id"]]
    with pytest.raises(NotFound):
        networks.get_network(str(uuid.uuid4()))
    with pytest.raises(BadRequest, match="CIDR"):
        networks.create_network("bad", "10.0.0.1/24")
    with pytest.raises(BadRequest, match="too small"):
        networks.create_network("tiny", "10.0.0.0/31")


def test_ip_allocation_is_unique_across_many_ports(networks: NetworkService) -> None:
    net = networks.create_network("n", "10.1.0.0/24")
    ports = [networks.create_port(net["id"], project_id="p1") for _ in range(120)]
    ips = [p["fixed_ips"][0]["ip_address"] for p in ports]
    assert len(set(ips)) == 120
    cidr = ipaddress.ip_network("10.1.0.0/24")
    for ip in ips:
        addr = ipaddress.ip_address(ip)
        assert addr in cidr
        assert addr not in (cidr.network_address, cidr.broadcast_address)
        assert ip != net["gateway_ip"]
    assert all(p["fixed_ips"][0]["subnet_id"] == net["subnet_id"] for p in ports)
    assert len({p["mac_address"] for p in ports}) == 120
    assert all(p["mac_address"].startswith("fa:16:3e:") for p in ports)
    assert ips[:2] == ["10.1.0.2", "10.1.0.3"]


def test_ip_allocation_under_concurrency(any_db: str) -> None:
    networks = NetworkService(any_db)
    net = networks.create_network("n", "10.2.0.0/24")
    with ThreadPoolExecutor(8) as pool:
        ports = list(
            pool.map(lambda _: networks.create_port(net["id"], project_id="p1"), range(40))
        )
    ips = {p["fixed_ips"][0]["ip_address"] for p in ports}
    assert len(ips) == 40
    listed = networks.list_ports(network_id=net["id"])
    assert {p["fixed_ips"][0]["ip_address"] for p in listed} == ips


def test_exhausted_network_and_address_reuse(networks: NetworkService) -> None:
    net = networks.create_network("small", "10.3.0.0/29")  # .2 to .6 after the gateway
    ports = [networks.create_port(net["id"], project_id="p1") for _ in range(5)]
    assert [p["fixed_ips"][0]["ip_address"] for p in ports] == [f"10.3.0.{i}" for i in range(2, 7)]
    with pytest.raises(Conflict, match="No more IP addresses"):
        networks.create_port(net["id"], project_id="p1")
    networks.delete_port(ports[1]["id"])
    again = networks.create_port(net["id"], project_id="p1")
    assert again["fixed_ips"][0]["ip_address"] == "10.3.0.3"


def test_create_port_idempotent_and_mac_checks(networks: NetworkService) -> None:
    net = networks.create_network("n", "10.4.0.0/24")
    other = networks.create_network("o", "10.5.0.0/24")
    pid = str(uuid.uuid4())
    a = networks.create_port(net["id"], project_id="p1", name="eth0", port_id=pid)
    assert networks.create_port(net["id"], project_id="p1", port_id=pid) == a
    assert len(networks.list_ports(network_id=net["id"])) == 1
    with pytest.raises(Conflict, match="already exists on network"):
        networks.create_port(other["id"], project_id="p1", port_id=pid)
    b = networks.create_port(net["id"], project_id="p1", mac_address="FA:16:3E:00:00:01")
    assert b["mac_address"] == "fa:16:3e:00:00:01"
    with pytest.raises(Conflict, match="already in use"):
        networks.create_port(net["id"], project_id="p1", mac_address="fa:16:3e:00:00:01")
    # The same MAC on another network is fine.
    networks.create_port(other["id"], project_id="p1", mac_address="fa:16:3e:00:00:01")
    with pytest.raises(BadRequest):
        networks.create_port(net["id"], project_id="p1", mac_address="zz:16:3e:00:00:01")
    with pytest.raises(NotFound):
        networks.create_port(str(uuid.uuid4()), project_id="p1")
    assert a["status"] == "DOWN" and a["admin_state_up"] is True
    assert (a["device_id"], a["device_owner"], a["binding:host_id"]) == ("", "", "")
    assert a["binding:vif_type"] == "unbound"


def test_update_port_changes_only_given_fields(networks: NetworkService) -> None:
    net = networks.create_network("n", "10.6.0.0/24")
    port = networks.create_port(net["id"], project_id="p1")
    p = networks.update_port(port["id"], device_id="vm1", device_owner="compute:nova")
    assert (p["device_id"], p["device_owner"], p["status"]) == ("vm1", "compute:nova", "DOWN")
    p = networks.update_port(port["id"], status="ACTIVE")
    assert (p["device_id"], p["device_owner"], p["status"]) == ("vm1", "compute:nova", "ACTIVE")
    p = networks.update_port(port["id"], device_id="", device_owner=UNSET)
    assert (p["device_id"], p["device_owner"]) == ("", "compute:nova")
    with pytest.raises(BadRequest, match="status"):
        networks.update_port(port["id"], status="BUILD")
    with pytest.raises(NotFound):
        networks.update_port(str(uuid.uuid4()), device_id="x")
    networks.update_port(port["id"], device_id="vm2")
    assert [x["id"] for x in networks.list_ports(device_id="vm2")] == [port["id"]]
    assert networks.list_ports(device_id="vm1") == []
    assert [x["id"] for x in networks.list_ports(project_id="p1")] == [port["id"]]
    assert networks.list_ports(project_id="p2") == []


def test_bindings_switch_from_source_to_destination(any_db: str) -> None:
    networks = NetworkService(any_db)
    net = networks.create_network("n", "10.7.0.0/24")
    port = networks.create_port(net["id"], project_id="p1")
    pid = port["id"]

    src = networks.create_binding(pid, "src", active=True)
    assert src["status"] == "ACTIVE" and src["vif_type"] == "ovs" and src["vnic_type"] == "normal"
    p = networks.get_port(pid)
    assert p["status"] == "ACTIVE" and p["binding:host_id"] == "src"

    dst = networks.create_binding(pid, "dst", profile={"migrating_to": "dst"})
    assert dst["status"] == "INACTIVE" and dst["profile"] == {"migrating_to": "dst"}
    assert networks.create_binding(pid, "dst") == dst  # idempotent per (port, host)
    assert [(b["host"], b["status"]) for b in networks.bindings(pid)] == [
        ("dst", "INACTIVE"),
        ("src", "ACTIVE"),
    ]

    act = networks.activate_binding(pid, "dst")
    assert act["status"] == "ACTIVE"
    assert networks.activate_binding(pid, "dst") == act  # idempotent
    assert [(b["host"], b["status"]) for b in networks.bindings(pid)] == [
        ("dst", "ACTIVE"),
        ("src", "INACTIVE"),
    ]
    assert sum(b["status"] == "ACTIVE" for b in networks.all_bindings()) == 1
    assert networks.get_port(pid)["binding:host_id"] == "dst"

    networks.delete_binding(pid, "src")
    networks.delete_binding(pid, "src")  # idempotent
    assert [b["host"] for b in networks.bindings(pid)] == ["dst"]
    assert networks.get_port(pid)["status"] == "ACTIVE"

    # A revert: the source is bound again and activated; deleting the active binding downs the port.
    networks.create_binding(pid, "src")
    networks.activate_binding(pid, "src")
    networks.delete_binding(pid, "src")
    p = networks.get_port(pid)
    assert p["status"] == "DOWN" and p["binding:host_id"] == ""
    assert [(b["host"], b["status"]) for b in networks.bindings(pid)] == [("dst", "INACTIVE")]


def test_create_binding_active_deactivates_others(networks: NetworkService) -> None:
    net = networks.create_network("n", "10.8.0.0/24")
    pid = networks.create_port(net["id"], project_id="p1")["id"]
    networks.create_binding(pid, "a", active=True)
    networks.create_binding(pid, "b", active=True)
    assert [(b["host"], b["status"]) for b in networks.bindings(pid)] == [
        ("a", "INACTIVE"),
        ("b", "ACTIVE"),
    ]
    with pytest.raises(NotFound, match="no binding on host c"):
        networks.activate_binding(pid, "c")
    with pytest.raises(NotFound):
        networks.create_binding(str(uuid.uuid4()), "a")
    with pytest.raises(BadRequest):
        networks.create_binding(pid, "")


def test_delete_port_removes_bindings_and_address(networks: NetworkService) -> None:
    net = networks.create_network("n", "10.9.0.0/24")
    keep = networks.create_port(net["id"], project_id="p1")
    networks.create_binding(keep["id"], "h1", active=True)
    port = networks.create_port(net["id"], project_id="p1")
    networks.create_binding(port["id"], "h1", active=True)
    networks.create_binding(port["id"], "h2")
    assert len(networks.all_bindings()) == 3

    networks.delete_port(port["id"])
    networks.delete_port(port["id"])  # idempotent
    assert [(b["port_id"], b["host"]) for b in networks.all_bindings()] == [(keep["id"], "h1")]
    with pytest.raises(NotFound):
        networks.get_port(port["id"])
    with pytest.raises(NotFound):
        networks.bindings(port["id"])
    networks.delete_binding(port["id"], "h1")  # a gone port: nothing to do
    reused = networks.create_port(net["id"], project_id="p1")
    assert reused["fixed_ips"] == [
        {"subnet_id": net["subnet_id"], "ip_address": port["fixed_ips"][0]["ip_address"]}
    ]
