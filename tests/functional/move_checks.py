"""Shared checks for the move scenarios (SCENARIOS.md), read through atoll's HTTP API.

``boot`` makes a server the way SCENARIOS.md's setup says (a pre-existing port
with the VIF tag ``private``, the server tag ``test``, a key pair, metadata;
volume-backed servers boot from a volume with the BDM tag ``root``).
``resize_and_validate`` performs a resize or cold migrate and then every check
of the "Resize and validate" list; ``confirm_and_validate``,
``revert_and_validate`` and ``delete_and_validate`` do the same for what
follows.  Every check reads the HTTP API (compute, placement and atoll-admin);
the in-process service clients are used for setup only.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.harness import ADMIN_TOKEN, Api, Atoll

POLL_S = 0.01
TIMEOUT_S = 30.0
MIB = 1024 * 1024
MARKER_OFFSET = MIB
RUNNING, SHUTDOWN = 1, 4
PLACEMENT_HEADERS = {"X-Auth-Token": ADMIN_TOKEN}


# --- flavors --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flavor:
    id: str
    name: str
    vcpus: int
    memory_mb: int
    root_gb: int
    ephemeral_gb: int = 0

    def allocation(self, volume_backed: bool) -> dict[str, int]:
        """What placement holds for this flavor (no DISK_GB for a volume-backed server)."""
        disk = (0 if volume_backed else self.root_gb) + self.ephemeral_gb
        res = {"VCPU": self.vcpus, "MEMORY_MB": self.memory_mb, "DISK_GB": disk}
        return {rc: amount for rc, amount in res.items() if amount}

    def usage(self, volume_backed: bool) -> tuple[int, int, int]:
        """(vcpus, memory_mb, local_gb) this flavor adds to a hypervisor's usage."""
        disk = (0 if volume_backed else self.root_gb) + self.ephemeral_gb
        return self.vcpus, self.memory_mb, disk


FLAVORS = {
    "1": Flavor("1", "m1.tiny", 1, 512, 1),
    "2": Flavor("2", "m1.small", 1, 2048, 20),
    "3": Flavor("3", "m1.medium", 2, 4096, 40),
}

CROSS_CELL_MOVE_EVENTS = {
    "conductor_migrate_server": None,
    "compute_prep_snapshot_based_resize_at_dest": "target",
    "compute_prep_snapshot_based_resize_at_source": "source",
    "compute_finish_snapshot_based_resize_at_dest": "target",
}
SAME_CELL_MOVE_EVENTS = {
    "conductor_migrate_server": None,
    "compute_prep_resize": "target",
    "compute_resize_instance": "source",
    "compute_finish_resize": "target",
}
CROSS_CELL_CONFIRM_EVENTS = {
    "conductor_confirm_snapshot_based_resize": None,
    "compute_confirm_snapshot_based_resize_at_source": "source",
}
SAME_CELL_CONFIRM_EVENTS = {"compute_confirm_resize": "source"}
CROSS_CELL_REVERT_EVENTS = {
    "conductor_revert_snapshot_based_resize": None,
    "compute_revert_snapshot_based_resize_at_dest": "target",
    "compute_finish_revert_snapshot_based_resize_at_source": "source",
}
SAME_CELL_REVERT_EVENTS = {
    "compute_revert_resize": "target",
    "compute_finish_revert_resize": "source",
}
CONFIRM_NOTIFICATIONS = ["instance.resize_confirm.start", "instance.resize_confirm.end"]
REVERT_NOTIFICATIONS = [
    "instance.resize_revert.start",
    "instance.exists",
    "instance.resize_revert.end",
]


# --- small readers ----------------------------------------------------------------------------


def wait_until(what: str, probe: Callable[[], Any], timeout: float = TIMEOUT_S) -> Any:
    """Poll ``probe`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(POLL_S)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_status(atoll: Atoll, api: Api, server_id: str, status: str) -> dict[str, Any]:
    """Wait for ``status`` with no task; unlike ``Atoll.wait_for`` an ERROR server that is
    busy with a task (a hard reboot out of ERROR) is still waited for."""

    def probe() -> dict[str, Any] | None:
        shown = api.ok("GET", f"/servers/{server_id}")["server"]
        if shown["OS-EXT-STS:task_state"] is None:
            if shown["status"] == status:
                return shown
            assert shown["status"] != "ERROR", f"server went to ERROR: {shown.get('fault')}"
        return None

    return wait_until(f"server {server_id} {status}", probe)


def cell_of(atoll: Atoll, host: str) -> str:
    """The cell a host was set up in (the test's own layout)."""
    for cell, hosts in atoll.embedded.cells.items():
        if host in hosts:
            return cell
    raise AssertionError(f"host {host} is in no cell of {atoll.embedded.cells}")


def all_hosts(atoll: Atoll) -> list[str]:
    return [h for hosts in atoll.embedded.cells.values() for h in hosts]


def admin_server(atoll: Atoll, server_id: str) -> dict[str, Any]:
    return atoll.admin.ok("GET", f"/servers/{server_id}")["server"]


def action(atoll: Atoll, server_id: str, body: dict[str, Any], expect: int = 202, **kw: Any):
    return atoll.admin.ok("POST", f"/servers/{server_id}/action", expect, json=body, **kw)


def conflict_message(resp: Any) -> str:
    assert resp.status_code == 409, f"expected 409, got {resp.status_code}: {resp.text}"
    return resp.json()["conflictingRequest"]["message"]


def set_faults(atoll: Atoll, spec: dict[str, str]) -> None:
    atoll.admin.ok("PUT", "/atoll-admin/faults", 200, json={"faults": spec})


def migrations(atoll: Atoll, server_id: str) -> list[dict[str, Any]]:
    """The server's migrations, as ``GET /os-migrations`` lists them (newest first)."""
    return atoll.admin.ok("GET", f"/os-migrations?instance_uuid={server_id}", version="2.80")[
        "migrations"
    ]


def migration_status(atoll: Atoll, server_id: str, migration_uuid: str) -> str:
    found = [m for m in migrations(atoll, server_id) if m["uuid"] == migration_uuid]
    assert len(found) == 1, f"migration {migration_uuid} listed {len(found)} times: {found}"
    return found[0]["status"]


def wait_migration(
    atoll: Atoll, server_id: str, migration_uuid: str, status: str, timeout: float = TIMEOUT_S
) -> dict[str, Any]:
    return wait_until(
        f"migration {migration_uuid} {status}",
        lambda: next(
            (
                m
                for m in migrations(atoll, server_id)
                if m["uuid"] == migration_uuid and m["status"] == status
            ),
            None,
        ),
        timeout,
    )


def instance_actions(atoll: Atoll, server_id: str) -> list[dict[str, Any]]:
    """Newest first."""
    return atoll.admin.ok("GET", f"/servers/{server_id}/os-instance-actions")["instanceActions"]


def action_events(atoll: Atoll, server_id: str, request_id: str) -> list[dict[str, Any]]:
    body = atoll.admin.ok("GET", f"/servers/{server_id}/os-instance-actions/{request_id}")
    return body["instanceAction"]["events"]


def notification_mark(atoll: Atoll) -> int:
    """Where the process-wide notification list ends now (pass it as ``since``)."""
    return len(atoll.admin.ok("GET", "/atoll-admin/notifications")["notifications"])


def notifications(atoll: Atoll, server_id: str, since: int = 0) -> list[str]:
    body = atoll.admin.ok(
        "GET", f"/atoll-admin/notifications?instance_uuid={server_id}&since={since}"
    )
    return [n["event_type"] for n in body["notifications"]]


def wait_notification(atoll: Atoll, server_id: str, event_type: str, since: int) -> list[str]:
    """Wait for ``event_type`` (a workflow's last word) after ``since``; every event type
    of the server emitted since then."""
    return wait_until(
        event_type,
        lambda: (found := notifications(atoll, server_id, since)) and event_type in found and found,
    )


def providers(atoll: Atoll) -> dict[str, str]:
    """Resource provider uuid -> name (the host name)."""
    resp = atoll.client.get("/placement/resource_providers", headers=PLACEMENT_HEADERS)
    assert resp.status_code == 200, resp.text
    return {p["uuid"]: p["name"] for p in resp.json()["resource_providers"]}


def provider_uuid(atoll: Atoll, host: str) -> str:
    found = [uuid for uuid, name in providers(atoll).items() if name == host]
    assert len(found) == 1, f"{len(found)} resource providers named {host}"
    return found[0]


def consumer_allocations(atoll: Atoll, consumer: str) -> dict[str, dict[str, int]]:
    """A consumer's allocations as {host name: resources}."""
    resp = atoll.client.get(f"/placement/allocations/{consumer}", headers=PLACEMENT_HEADERS)
    assert resp.status_code == 200, resp.text
    names = providers(atoll)
    return {names[rp]: a["resources"] for rp, a in resp.json()["allocations"].items()}


def provider_allocations(atoll: Atoll, host: str) -> dict[str, dict[str, int]]:
    """A host's provider allocations as {consumer: resources}."""
    uuid = provider_uuid(atoll, host)
    resp = atoll.client.get(
        f"/placement/resource_providers/{uuid}/allocations", headers=PLACEMENT_HEADERS
    )
    assert resp.status_code == 200, resp.text
    return {c: a["resources"] for c, a in resp.json()["allocations"].items()}


def hypervisor_usage(atoll: Atoll) -> dict[str, tuple[int, int, int]]:
    """{hypervisor_hostname: (vcpus_used, memory_mb_used, local_gb_used)} at 2.87."""
    body = atoll.admin.ok("GET", "/os-hypervisors/detail", version="2.87")
    return {
        h["hypervisor_hostname"]: (h["vcpus_used"], h["memory_mb_used"], h["local_gb_used"])
        for h in body["hypervisors"]
    }


def plus(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def minus(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x - y for x, y in zip(a, b, strict=True))


def guests(atoll: Atoll, host: str) -> dict[str, int]:
    """{server uuid: power state} of the guests defined on a host."""
    body = atoll.admin.ok("GET", f"/atoll-admin/hosts/{host}/guests")
    return {g["uuid"]: g["power_state"] for g in body["guests"]}


def guest(atoll: Atoll, host: str, server_id: str) -> dict[str, Any]:
    """A guest's description, or {} when the host has no such guest."""
    resp = atoll.admin.get(f"/atoll-admin/hosts/{host}/guests/{server_id}")
    if resp.status_code == 404:
        return {}
    assert resp.status_code == 200, resp.text
    return resp.json().get("guest") or {}


def cell_copies(atoll: Atoll, cell: str, server_id: str) -> list[dict[str, Any]]:
    """Every row a cell holds for the server (hidden and soft-deleted included)."""
    return atoll.admin.ok("GET", f"/atoll-admin/cells/{cell}/instances/{server_id}")["instances"]


def images_for(atoll: Atoll, server_id: str) -> list[dict[str, Any]]:
    """Every image made for the server, deleted ones included."""
    return atoll.admin.ok("GET", f"/atoll-admin/images?instance_uuid={server_id}")["images"]


def volume_attachments(atoll: Atoll, server_id: str) -> list[dict[str, Any]]:
    body = atoll.admin.ok("GET", f"/atoll-admin/volume-attachments?instance_uuid={server_id}")
    return body["attachments"]


def port_bindings(atoll: Atoll, port_id: str) -> list[dict[str, Any]]:
    return atoll.admin.ok("GET", f"/atoll-admin/port-bindings?port_id={port_id}")["bindings"]


def instances_used(api: Api) -> int:
    return api.ok("GET", "/limits")["limits"]["absolute"]["totalInstancesUsed"]


def wait_volume(atoll: Atoll, volume_id: str, status: str) -> None:
    wait_until(
        f"volume {volume_id} {status}",
        lambda: atoll.runtime.volumes.get(volume_id)["status"] == status,
    )


# --- servers as SCENARIOS.md sets them up -----------------------------------------------------


@dataclass
class Booted:
    """A server created by :func:`boot`, with what the checks compare against."""

    id: str
    name: str
    api: Api
    volume_backed: bool
    flavor: str
    image_id: str
    port_id: str
    key_name: str
    metadata: dict[str, str]
    root_volume: str | None = None
    data_volumes: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=lambda: ["test"])


def boot(
    atoll: Atoll,
    name: str = "vm",
    *,
    volume_backed: bool = False,
    flavor: str = "1",
    stopped: bool = False,
    zone: str | None = None,
    hints: dict[str, Any] | None = None,
    api: Api | None = None,
) -> Booted:
    """A server with a tagged pre-existing port, the tag ``test``, a key pair and metadata."""
    api = api or atoll.user
    project = "demo"
    port = atoll.runtime.networks.create_port(atoll.network_id, project_id=project)
    key_name = f"{name}-key"
    api.ok("POST", "/os-keypairs", 201, version="2.91", json={"keypair": {"name": key_name}})
    metadata = {"scenario": name, "owner": "acceptance"}
    body = atoll.server_body(
        name=name, flavor=flavor, tags=["test"], metadata=metadata, key_name=key_name
    )
    server = body["server"]
    server["networks"] = [{"port": port["id"], "tag": "private"}]
    if zone:
        server["availability_zone"] = zone
    root_volume = None
    if volume_backed:
        root_volume = atoll.runtime.volumes.create(
            1, project_id=project, name=f"{name}-root", image_id=atoll.image_id, bootable=True
        )["id"]
        server["imageRef"] = ""
        server["block_device_mapping_v2"] = [
            {
                "boot_index": 0,
                "uuid": root_volume,
                "source_type": "volume",
                "destination_type": "volume",
                "tag": "root",
            }
        ]
    if hints:
        body["os:scheduler_hints"] = hints
    server_id = api.ok("POST", "/servers", 202, json=body)["server"]["id"]
    atoll.wait_for(api, server_id, "ACTIVE")
    booted = Booted(
        id=server_id,
        name=name,
        api=api,
        volume_backed=volume_backed,
        flavor=flavor,
        image_id="" if volume_backed else atoll.image_id,
        port_id=port["id"],
        key_name=key_name,
        metadata=metadata,
        root_volume=root_volume,
    )
    if stopped:
        stop(atoll, booted)
    return booted


def stop(atoll: Atoll, server: Booted) -> None:
    server.api.ok("POST", f"/servers/{server.id}/action", 202, json={"os-stop": None})
    stopped = atoll.wait_for(server.api, server.id, "SHUTOFF")
    assert stopped["OS-EXT-STS:power_state"] == SHUTDOWN


def attach_volume(atoll: Atoll, server: Booted, tag: str = "data") -> str:
    """Attach a new data volume through the compute API and wait for it to be in-use."""
    volume = atoll.runtime.volumes.create(1, project_id="demo", name=f"{server.name}-{tag}")
    since = notification_mark(atoll)
    server.api.ok(
        "POST",
        f"/servers/{server.id}/os-volume_attachments",
        200,
        json={"volumeAttachment": {"volumeId": volume["id"], "tag": tag}},
    )
    wait_volume(atoll, volume["id"], "in-use")
    wait_until(  # the attach workflow has finished (its last word is this notification)
        "instance.volume_attach.end",
        lambda: "instance.volume_attach.end" in notifications(atoll, server.id, since),
    )
    server.data_volumes.append(volume["id"])
    return volume["id"]


def detach_volume(atoll: Atoll, server: Booted, volume_id: str) -> None:
    since = notification_mark(atoll)
    server.api.ok("DELETE", f"/servers/{server.id}/os-volume_attachments/{volume_id}", 202)
    wait_volume(atoll, volume_id, "available")
    wait_until(
        "instance.volume_detach.end",
        lambda: "instance.volume_detach.end" in notifications(atoll, server.id, since),
    )
    server.data_volumes.remove(volume_id)


def attached_volumes(atoll: Atoll, server: Booted) -> dict[str, str | None]:
    """{volume id: tag} as ``GET /servers/{id}/os-volume_attachments`` lists them."""
    body = server.api.ok("GET", f"/servers/{server.id}/os-volume_attachments")
    return {a["volumeId"]: a.get("tag") for a in body["volumeAttachments"]}


def write_marker(atoll: Atoll, host: str, server_id: str) -> bytes:
    """Write a marker into the root disk file of the server's guest on ``host``."""
    path = guest(atoll, host, server_id).get("root_disk_path")
    assert path, f"no root disk for {server_id} on {host}"
    marker = f"atoll-marker:{server_id}:{secrets.token_hex(8)}".encode()
    with open(path, "r+b") as fh:
        fh.seek(MARKER_OFFSET)
        fh.write(marker)
        fh.flush()
        os.fsync(fh.fileno())
    return marker


def read_marker(atoll: Atoll, host: str, server_id: str, length: int) -> bytes:
    path = guest(atoll, host, server_id).get("root_disk_path")
    assert path, f"no root disk for {server_id} on {host}"
    with open(path, "rb") as fh:
        fh.seek(MARKER_OFFSET)
        return fh.read(length)


# --- checks -----------------------------------------------------------------------------------


def check_events(
    atoll: Atoll,
    server_id: str,
    act: dict[str, Any],
    expected: dict[str, str | None],
    hosts: dict[str, str],
    *,
    tolerated_failures_on: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """The action has each expected event, ``Success``, on the right host (from 2.62)."""
    events = action_events(atoll, server_id, act["request_id"])
    tolerated = set(tolerated_failures_on)
    for name, role in expected.items():
        matching = [e for e in events if e["event"] == name]
        ok = [e for e in matching if e["result"] == "Success"]
        assert len(ok) == 1, f"{act['action']}: event {name} not once Success in {events}"
        if role is not None:
            assert ok[0].get("host") == hosts[role], (
                f"{act['action']}: {name} on {ok[0].get('host')}, expected {hosts[role]}"
            )
    for event in events:
        if event["result"] != "Success":
            assert event.get("host") in tolerated, f"{act['action']}: failed event {event}"
    return events


def check_tags_keys_and_metadata(atoll: Atoll, server: Booted) -> None:
    """The server tag, the VIF tag (and the BDM tag), the key pair and metadata survived."""
    shown = server.api.ok("GET", f"/servers/{server.id}")["server"]
    assert shown["tags"] == server.tags
    assert server.api.ok("GET", f"/servers/{server.id}/tags")["tags"] == server.tags
    assert shown["key_name"] == server.key_name
    assert shown["metadata"] == server.metadata
    interfaces = server.api.ok("GET", f"/servers/{server.id}/os-interface")["interfaceAttachments"]
    assert [(i["port_id"], i.get("tag")) for i in interfaces] == [(server.port_id, "private")]
    if server.volume_backed:
        assert attached_volumes(atoll, server).get(server.root_volume) == "root"


@dataclass
class Moved:
    """What :func:`resize_and_validate` saw; the confirm/revert/delete checks use it."""

    server: Booted
    migration_uuid: str
    source_host: str
    target_host: str
    source_cell: str
    target_cell: str
    old_flavor: Flavor
    new_flavor: Flavor
    stopped: bool
    usage_before: dict[str, tuple[int, int, int]]
    marker: bytes | None
    source_zone: str

    @property
    def cross_cell(self) -> bool:
        return self.source_cell != self.target_cell

    @property
    def hosts(self) -> dict[str, str]:
        return {"source": self.source_host, "target": self.target_host}

    @property
    def settled_status(self) -> str:
        return "SHUTOFF" if self.stopped else "ACTIVE"


def start_move(atoll: Atoll, server: Booted, *, flavor: str | None, host: str | None = None) -> str:
    """POST the resize (``flavor``) or cold migrate (optionally to ``host``); 202."""
    if flavor is not None:
        body: dict[str, Any] = {"resize": {"flavorRef": flavor}}
        verb = "resize"
    else:
        body = {"migrate": {"host": host} if host else None}
        verb = "migrate"
    action(atoll, server.id, body, version="2.56" if host else None)
    return verb


def resize_and_validate(
    atoll: Atoll,
    server: Booted,
    *,
    target_host: str,
    flavor: str | None = "2",
    host: str | None = None,
    target_zone: str | None = None,
    earlier_migrations: int = 0,
    min_actions: int = 2,
    tolerated_failures_on: Iterable[str] = (),
) -> Moved:
    """Resize (``flavor``) or cold migrate (``flavor=None``, optional ``host``) the server,
    wait for VERIFY_RESIZE and check every item of SCENARIOS.md's "Resize and validate"."""
    before = admin_server(atoll, server.id)
    source_host = before["OS-EXT-SRV-ATTR:host"]
    stopped = before["OS-EXT-STS:power_state"] == SHUTDOWN
    old = FLAVORS[server.flavor]
    new = FLAVORS[flavor] if flavor is not None else old
    earlier = {m["uuid"] for m in migrations(atoll, server.id)}
    assert len(earlier) == earlier_migrations, migrations(atoll, server.id)
    usage_before = hypervisor_usage(atoll)
    assert all(
        u >= o
        for u, o in zip(usage_before[source_host], old.usage(server.volume_backed), strict=True)
    ), usage_before
    quota_before = instances_used(server.api)
    images_before = {i["id"] for i in images_for(atoll, server.id)}
    marker = None if server.volume_backed else write_marker(atoll, source_host, server.id)

    since = notification_mark(atoll)
    verb = start_move(atoll, server, flavor=flavor, host=host)
    atoll.wait_for(atoll.admin, server.id, "VERIFY_RESIZE")
    # like Nova's tests: the move's workflow is over once it has said so
    wait_notification(atoll, server.id, "instance.resize_finish.end", since)

    source_cell, target_cell = cell_of(atoll, source_host), cell_of(atoll, target_host)
    cross = source_cell != target_cell
    hosts = {"source": source_host, "target": target_host}

    # the host is the expected one; listed exactly once; the target cell's zone
    shown = admin_server(atoll, server.id)
    assert shown["OS-EXT-SRV-ATTR:host"] == target_host, (
        f"moved to {shown['OS-EXT-SRV-ATTR:host']}, expected {target_host}"
    )
    assert shown["OS-EXT-STS:vm_state"] == "resized"
    assert shown["OS-EXT-STS:task_state"] is None
    listed = [s["id"] for s in server.api.ok("GET", "/servers")["servers"]]
    assert Counter(listed)[server.id] == 1, listed
    everyone = [s["id"] for s in atoll.admin.ok("GET", "/servers/detail?all_tenants=1")["servers"]]
    assert Counter(everyone)[server.id] == 1, everyone
    assert shown["OS-EXT-AZ:availability_zone"] == (target_zone or target_cell)
    assert shown["flavor"]["original_name"] == new.name

    # exactly one migration for this move, finished
    found = migrations(atoll, server.id)
    assert len(found) == earlier_migrations + 1, found
    assert len({m["uuid"] for m in found}) == len(found), f"a migration listed twice: {found}"
    (current,) = [m for m in found if m["uuid"] not in earlier]
    assert current["status"] == "finished", current
    assert current["migration_type"] == ("resize" if flavor is not None else "migration")
    assert (current["source_compute"], current["dest_compute"]) == (source_host, target_host)

    # instance actions, each with events, readable from the target cell
    acts = instance_actions(atoll, server.id)
    assert len(acts) >= min_actions + (1 if stopped else 0), acts
    for act in acts:
        assert action_events(atoll, server.id, act["request_id"]), f"no events for {act}"
    assert acts[0]["action"] == verb, acts
    assert acts[-1]["action"] == "create", acts
    if stopped:
        assert "stop" in [a["action"] for a in acts], acts
    check_events(
        atoll,
        server.id,
        acts[0],
        CROSS_CELL_MOVE_EVENTS if cross else SAME_CELL_MOVE_EVENTS,
        hosts,
        tolerated_failures_on=tolerated_failures_on,
    )

    # tags, key pair and metadata survived; the root disk's content too
    check_tags_keys_and_metadata(atoll, server)
    if marker is not None:
        assert read_marker(atoll, target_host, server.id, len(marker)) == marker, (
            "the root disk's content was not preserved"
        )

    # placement: old flavor on the source against the migration, new on the target
    vb = server.volume_backed
    assert consumer_allocations(atoll, current["uuid"]) == {source_host: old.allocation(vb)}
    assert consumer_allocations(atoll, server.id) == {target_host: new.allocation(vb)}

    # the target cell's copy stores the flavors and the new sizes
    copies = cell_copies(atoll, target_cell, server.id)
    assert len(copies) == 1, copies
    (copy,) = copies
    assert not copy["hidden"] and not copy["deleted"], copy
    assert copy["host"] == target_host and copy["vm_state"] == "resized", copy
    assert copy["old_flavor"]["flavorid"] == old.id, copy
    assert copy["new_flavor"]["flavorid"] == new.id, copy
    assert copy["flavor"] == copy["new_flavor"], copy
    assert (copy["vcpus"], copy["memory_mb"], copy["root_gb"], copy["ephemeral_gb"]) == (
        new.vcpus,
        new.memory_mb,
        new.root_gb,
        new.ephemeral_gb,
    ), copy
    if cross:
        source_copies = cell_copies(atoll, source_cell, server.id)
        flags = [(bool(c["hidden"]), bool(c["deleted"])) for c in source_copies]
        assert flags == [(True, False)], source_copies

    # the guest moved; the source keeps the old flavor's usage until confirm/revert
    power = SHUTDOWN if stopped else RUNNING
    assert server.id not in guests(atoll, source_host)
    assert guests(atoll, target_host).get(server.id) == power
    usage = hypervisor_usage(atoll)
    assert usage[source_host] == usage_before[source_host], (usage, usage_before)
    assert usage[target_host] == plus(usage_before[target_host], new.usage(vb)), (
        usage,
        usage_before,
    )

    # quota counts the server once
    assert instances_used(server.api) == quota_before

    # volume-backed: the root volume is attached on both hosts during a cross-cell move
    if vb and cross:
        attachments = volume_attachments(atoll, server.id)
        root = [a for a in attachments if a["volume_id"] == server.root_volume]
        assert sorted(a["host"] for a in root) == sorted([source_host, target_host]), root

    # power state preserved
    assert shown["OS-EXT-STS:power_state"] == power

    # images: one temporary snapshot, already deleted (image-backed, across cells)
    made = [i for i in images_for(atoll, server.id) if i["id"] not in images_before]
    if vb:
        assert images_for(atoll, server.id) == [], "a volume-backed move made an image"
        assert shown["image"] == ""
    else:
        assert shown["image"]["id"] == server.image_id
        if cross:
            assert len(made) == 1, made
            assert made[0]["status"] == "deleted", made
        else:
            assert made == [], made

    return Moved(
        server=server,
        migration_uuid=current["uuid"],
        source_host=source_host,
        target_host=target_host,
        source_cell=source_cell,
        target_cell=target_cell,
        old_flavor=old,
        new_flavor=new,
        stopped=stopped,
        usage_before=usage_before,
        marker=marker,
        source_zone=before["OS-EXT-AZ:availability_zone"],
    )


def check_confirmed(atoll: Atoll, moved: Moved, since: int) -> None:
    """What a confirm (by the API, on delete or automatic) leaves: S1's checks."""
    server = moved.server
    vb = server.volume_backed
    emitted = wait_notification(atoll, server.id, "instance.resize_confirm.end", since)
    assert emitted == CONFIRM_NOTIFICATIONS, emitted
    assert migration_status(atoll, server.id, moved.migration_uuid) == "confirmed"
    shown = admin_server(atoll, server.id)
    assert shown["status"] == moved.settled_status
    assert shown["OS-EXT-SRV-ATTR:host"] == moved.target_host
    assert shown["OS-EXT-STS:power_state"] == (SHUTDOWN if moved.stopped else RUNNING)
    assert shown["flavor"]["original_name"] == moved.new_flavor.name

    # placement: nothing left for the migration; the server's new flavor on the target
    assert consumer_allocations(atoll, moved.migration_uuid) == {}
    source_allocs = provider_allocations(atoll, moved.source_host)
    assert server.id not in source_allocs and moved.migration_uuid not in source_allocs
    assert consumer_allocations(atoll, server.id) == {
        moved.target_host: moved.new_flavor.allocation(vb)
    }

    # a confirmResize action with its events, all Success
    acts = instance_actions(atoll, server.id)
    assert acts[0]["action"] == "confirmResize", acts
    check_events(
        atoll,
        server.id,
        acts[0],
        CROSS_CELL_CONFIRM_EVENTS if moved.cross_cell else SAME_CELL_CONFIRM_EVENTS,
        moved.hosts,
    )

    # the guest only on the target; the source's usage back to what it was without it
    assert server.id not in guests(atoll, moved.source_host)
    assert guest(atoll, moved.source_host, server.id) == {}
    assert server.id in guests(atoll, moved.target_host)
    usage = hypervisor_usage(atoll)
    assert usage[moved.source_host] == minus(
        moved.usage_before[moved.source_host], moved.old_flavor.usage(vb)
    ), usage

    # the source cell's copy is gone; the target's is the only one
    if moved.cross_cell:
        assert cell_copies(atoll, moved.source_cell, server.id) == []
    copies = cell_copies(atoll, moved.target_cell, server.id)
    assert [(bool(c["hidden"]), bool(c["deleted"])) for c in copies] == [(False, False)], copies

    assert notifications(atoll, server.id, since) == CONFIRM_NOTIFICATIONS
    check_tags_keys_and_metadata(atoll, server)
    server.flavor = moved.new_flavor.id


def confirm_and_validate(atoll: Atoll, moved: Moved) -> None:
    since = notification_mark(atoll)
    action(atoll, moved.server.id, {"confirmResize": None}, 204)
    atoll.wait_for(atoll.admin, moved.server.id, moved.settled_status)
    check_confirmed(atoll, moved, since)


def revert_and_validate(atoll: Atoll, moved: Moved) -> None:
    """Revert and check S2's list: back on the source host with the old flavor."""
    server = moved.server
    vb = server.volume_backed
    since = notification_mark(atoll)
    action(atoll, server.id, {"revertResize": None}, 202)
    atoll.wait_for(atoll.admin, server.id, moved.settled_status)
    emitted = wait_notification(atoll, server.id, "instance.resize_revert.end", since)
    assert emitted == REVERT_NOTIFICATIONS, emitted
    assert migration_status(atoll, server.id, moved.migration_uuid) == "reverted"

    shown = admin_server(atoll, server.id)
    assert shown["OS-EXT-SRV-ATTR:host"] == moved.source_host
    assert shown["OS-EXT-AZ:availability_zone"] == moved.source_zone
    assert shown["OS-EXT-STS:power_state"] == (SHUTDOWN if moved.stopped else RUNNING)
    assert shown["flavor"]["original_name"] == moved.old_flavor.name

    # placement: the source allocation is the server's again; the target holds nothing
    target_allocs = provider_allocations(atoll, moved.target_host)
    assert server.id not in target_allocs and moved.migration_uuid not in target_allocs
    assert consumer_allocations(atoll, moved.migration_uuid) == {}
    assert consumer_allocations(atoll, server.id) == {
        moved.source_host: moved.old_flavor.allocation(vb)
    }

    # a revertResize action with its events on the right hosts, all Success
    acts = instance_actions(atoll, server.id)
    assert acts[0]["action"] == "revertResize", acts
    check_events(
        atoll,
        server.id,
        acts[0],
        CROSS_CELL_REVERT_EVENTS if moved.cross_cell else SAME_CELL_REVERT_EVENTS,
        moved.hosts,
    )

    # the guest only on the source, in its power state, with its disk as it was
    power = SHUTDOWN if moved.stopped else RUNNING
    assert guests(atoll, moved.source_host).get(server.id) == power
    assert server.id not in guests(atoll, moved.target_host)
    if moved.marker is not None:
        assert read_marker(atoll, moved.source_host, server.id, len(moved.marker)) == moved.marker
    usage = hypervisor_usage(atoll)
    assert usage[moved.source_host] == moved.usage_before[moved.source_host], usage
    assert usage[moved.target_host] == moved.usage_before[moved.target_host], usage

    # only the source cell's copy is left, visible, with the old flavor
    if moved.cross_cell:
        assert cell_copies(atoll, moved.target_cell, server.id) == []
    copies = cell_copies(atoll, moved.source_cell, server.id)
    assert [(bool(c["hidden"]), bool(c["deleted"])) for c in copies] == [(False, False)], copies
    assert copies[0]["flavor"]["flavorid"] == moved.old_flavor.id, copies

    assert notifications(atoll, server.id, since) == REVERT_NOTIFICATIONS
    check_tags_keys_and_metadata(atoll, server)


def delete_and_validate(atoll: Atoll, server: Booted) -> None:
    """Delete the server: no allocation, guest, attachment or live copy is left."""
    server.api.ok("DELETE", f"/servers/{server.id}", 204)
    atoll.wait_gone(server.api, server.id)
    assert consumer_allocations(atoll, server.id) == {}
    for host in all_hosts(atoll):
        assert server.id not in guests(atoll, host), host
        assert server.id not in provider_allocations(atoll, host), host
    assert volume_attachments(atoll, server.id) == []
    for volume_id in [server.root_volume, *server.data_volumes]:
        if volume_id:
            assert atoll.runtime.volumes.get(volume_id)["status"] == "available", volume_id
    for cell in atoll.embedded.cells:
        live = [c for c in cell_copies(atoll, cell, server.id) if not c["deleted"]]
        assert live == [], (cell, live)
    assert port_bindings(atoll, server.port_id) == []
