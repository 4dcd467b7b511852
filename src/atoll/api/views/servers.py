"""The server body, exactly as the compute API shows it at each microversion."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from atoll.api.server_records import DownCellServer, ServerRecord

# (vm_state, task_state) -> status; task states not listed fall back to the vm_state's status
_VM_STATUS = {
    "building": "BUILD",
    "active": "ACTIVE",
    "stopped": "SHUTOFF",
    "resized": "VERIFY_RESIZE",
    "paused": "PAUSED",
    "suspended": "SUSPENDED",
    "rescued": "RESCUE",
    "error": "ERROR",
    "deleted": "DELETED",
    "soft-delete": "SOFT_DELETED",
    "shelved": "SHELVED",
    "shelved_offloaded": "SHELVED_OFFLOADED",
}
_TASK_STATUS = {
    "rebooting": "REBOOT",
    "reboot_pending": "REBOOT",
    "reboot_started": "REBOOT",
    "rebooting_hard": "HARD_REBOOT",
    "reboot_pending_hard": "HARD_REBOOT",
    "reboot_started_hard": "HARD_REBOOT",
    "resize_prep": "RESIZE",
    "resize_migrating": "RESIZE",
    "resize_migrated": "RESIZE",
    "resize_finish": "RESIZE",
    "resize_reverting": "REVERT_RESIZE",
    "resize_confirming": "VERIFY_RESIZE",
    "migrating": "MIGRATING",
    "rebuilding": "REBUILD",
    "password": "PASSWORD",
}
# task states under which a server keeps its vm_state's status
_KEEP_VM_STATUS = {
    "deleting",
    "powering-off",
    "powering-on",
    "spawning",
    "scheduling",
    "networking",
    "block_device_mapping",
    "image_snapshot",
    "image_snapshot_pending",
    "image_pending_upload",
    "image_uploading",
}


def status_of(vm_state: str, task_state: str | None) -> str:
    if vm_state == "building":
        return "BUILD"
    if vm_state == "resized" and task_state == "resize_reverting":
        return "REVERT_RESIZE"
    if task_state and task_state not in _KEEP_VM_STATUS and vm_state in ("active", "stopped"):
        return _TASK_STATUS.get(task_state, _VM_STATUS.get(vm_state, "UNKNOWN"))
    return _VM_STATUS.get(vm_state, "UNKNOWN")


def vm_states_for_status(status: str) -> list[tuple[str, str | None]] | None:
    """(vm_state, task_state) pairs behind a status filter; None if the status is unknown."""
    status = status.upper()
    pairs: list[tuple[str, str | None]] = [(v, None) for v, s in _VM_STATUS.items() if s == status]
    pairs += [(v, t) for t, s in _TASK_STATUS.items() if s == status for v in ("active", "stopped")]
    return pairs or None


def isotime(value: dt.datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def host_id(project_id: str, host: str | None) -> str:
    if not host:
        return ""
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def links(base: str, project_id: str, kind: str, ident: str) -> list[dict[str, str]]:
    root = base.rstrip("/")
    return [
        {"href": f"{root}/v2.1/{project_id}/{kind}/{ident}", "rel": "self"},
        {"href": f"{root}/{project_id}/{kind}/{ident}", "rel": "bookmark"},
    ]


def bookmark(base: str, project_id: str, kind: str, ident: str) -> list[dict[str, str]]:
    return [{"href": f"{base.rstrip('/')}/{project_id}/{kind}/{ident}", "rel": "bookmark"}]


def addresses(
    record: ServerRecord, ports: dict[str, dict[str, Any]], network_names: dict[str, str]
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for vif in record.vifs:
        port = ports.get(vif["port_id"])
        if port is None:
            continue
        name = network_names.get(port["network_id"], port["network_id"])
        for ip in port.get("fixed_ips", []):
            out.setdefault(name, []).append(
                {
                    "addr": ip["ip_address"],
                    "OS-EXT-IPS-MAC:mac_addr": port["mac_address"],
                    "OS-EXT-IPS:type": "fixed",
                    "version": 6 if ":" in ip["ip_address"] else 4,
                }
            )
    return out


def brief(record: ServerRecord, base: str) -> dict[str, Any]:
    return {
        "id": record.uuid,
        "links": links(base, record.project_id, "servers", record.uuid),
        "name": record.name,
    }


def down_cell(server: DownCellServer, base: str, *, detail: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": server.uuid,
        "status": "UNKNOWN",
        "tenant_id": server.project_id,
        "created": isotime(server.created_at),
        "links": links(base, server.project_id, "servers", server.uuid),
    }
    return body


def detail(
    record: ServerRecord,
    *,
    ver: Any,
    base: str,
    is_admin: bool,
    addrs: dict[str, list[dict[str, Any]]],
    image: dict[str, Any] | None = None,
    show_extra_specs: bool = False,
    host_status: str | None = None,
) -> dict[str, Any]:
    flavor = record.flavor
    status = status_of(record.vm_state, record.task_state)
    body: dict[str, Any] = {
        "accessIPv4": record.access_ip_v4 or "",
        "accessIPv6": record.access_ip_v6 or "",
        "addresses": addrs,
        "created": isotime(record.created_at),
        "hostId": host_id(record.project_id, record.host),
        "id": record.uuid,
        "key_name": record.key_name,
        "links": links(base, record.project_id, "servers", record.uuid),
        "metadata": record.metadata,
        "name": record.name,
        "config_drive": record.config_drive,
        "OS-DCF:diskConfig": "MANUAL",
        "OS-EXT-AZ:availability_zone": record.availability_zone or "",
        "OS-EXT-STS:power_state": record.power_state,
        "OS-EXT-STS:task_state": record.task_state,
        "OS-EXT-STS:vm_state": record.vm_state,
        "os-extended-volumes:volumes_attached": [
            {
                "id": v["id"],
                **({"delete_on_termination": v["delete_on_termination"]} if ver >= "2.3" else {}),
            }
            for v in record.volumes
        ],
        "OS-SRV-USG:launched_at": record.launched_at.isoformat() if record.launched_at else None,
        "OS-SRV-USG:terminated_at": (
            record.terminated_at.isoformat() if record.terminated_at else None
        ),
        "progress": 0,
        "security_groups": [{"name": "default"}],
        "status": status,
        "tenant_id": record.project_id,
        "updated": isotime(record.updated_at or record.created_at),
        "user_id": record.user_id,
    }
    if record.image_ref:
        body["image"] = {
            "id": record.image_ref,
            "links": bookmark(base, record.project_id, "images", record.image_ref),
        }
        if ver >= "2.98" and image is not None:
            body["image"]["properties"] = dict(image.get("properties") or {})
    else:
        body["image"] = ""
    if ver >= "2.47":
        body["flavor"] = {
            "disk": flavor["root_gb"],
            "ephemeral": flavor.get("ephemeral_gb", 0),
            "original_name": flavor["name"],
            "ram": flavor["memory_mb"],
            "swap": flavor.get("swap", 0),
            "vcpus": flavor["vcpus"],
        }
        if show_extra_specs:
            body["flavor"]["extra_specs"] = dict(flavor.get("extra_specs") or {})
    else:
        body["flavor"] = {
            "id": flavor["flavorid"],
            "links": bookmark(base, record.project_id, "flavors", flavor["flavorid"]),
        }
    if is_admin:
        body["OS-EXT-SRV-ATTR:host"] = record.host
        body["OS-EXT-SRV-ATTR:hypervisor_hostname"] = record.node
        body["OS-EXT-SRV-ATTR:instance_name"] = f"instance-{record.instance_id:08x}"
        if ver >= "2.3":
            body["OS-EXT-SRV-ATTR:reservation_id"] = f"r-{record.uuid[:8]}"
            body["OS-EXT-SRV-ATTR:launch_index"] = record.launch_index
            body["OS-EXT-SRV-ATTR:hostname"] = record.hostname
            body["OS-EXT-SRV-ATTR:kernel_id"] = ""
            body["OS-EXT-SRV-ATTR:ramdisk_id"] = ""
            body["OS-EXT-SRV-ATTR:root_device_name"] = record.root_device_name
            body["OS-EXT-SRV-ATTR:user_data"] = record.user_data
    if ver >= "2.90":
        body["OS-EXT-SRV-ATTR:hostname"] = record.hostname
    if ver >= "2.9":
        body["locked"] = record.locked
    if ver >= "2.16" and host_status is not None:
        body["host_status"] = host_status
    if ver >= "2.19":
        body["description"] = record.description
    if ver >= "2.26":
        body["tags"] = list(record.tags)
    if ver >= "2.63":
        body["trusted_image_certificates"] = None
    if ver >= "2.71":
        body["server_groups"] = list(record.group_uuids)
    if ver >= "2.73":
        body["locked_reason"] = None
    if ver >= "2.96":
        body["pinned_availability_zone"] = record.requested_az
    if ver >= "2.100":
        body["scheduler_hints"] = dict(record.scheduler_hints)
    if record.fault is not None and status in ("ERROR", "DELETED"):
        fault = {
            "code": record.fault["code"],
            "created": isotime(record.fault["created"]),
            "message": record.fault["message"],
        }
        if is_admin and record.fault.get("details"):
            fault["details"] = record.fault["details"]
        body["fault"] = fault
    return body
