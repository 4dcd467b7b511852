"""/servers: create, list, show, update, delete.

Create and delete only record what was asked and start a workflow: the
response is 202 before any host is touched.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import string
import uuid as uuidlib
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from atoll import actions
from atoll.api import policy
from atoll.api.deps import ContextDep, RuntimeDep, VersionDep
from atoll.api.quotas import QuotaEngine
from atoll.api.schemas.servers import CreateServerBody, ServerCreate, UpdateServerBody
from atoll.api.server_records import (
    DownCellServer,
    ListQuery,
    ServerRecord,
    get_server,
    list_servers,
)
from atoll.api.views import servers as view
from atoll.availability_zones import list_zones
from atoll.conductor import engine
from atoll.conductor.workflows import build, delete
from atoll.context import RequestContext
from atoll.db import flavors, instances
from atoll.db.api_models import (
    BuildRequest,
    InstanceGroup,
    InstanceGroupMember,
    InstanceMapping,
    KeyPair,
    RequestSpec,
)
from atoll.db.session import session_scope
from atoll.exceptions import BadRequest, Conflict, NotFound
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)

router = APIRouter()


def base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# ---------------------------------------------------------------- create


def _resolve_networks(
    rt: Runtime, ctx: RequestContext, server: ServerCreate, ver: Any
) -> list[dict[str, Any]]:
    nets = server.networks
    if nets is None and ver >= "2.37":
        raise BadRequest("Invalid input for field/attribute networks. 'networks' is required")
    if nets == "none":
        return []
    if nets is None or nets == "auto":
        available = rt.networks.list_networks()
        if not available:
            return []
        return [{"network_id": available[0]["id"], "port_id": None, "tag": None}]
    if nets and ver < "2.32" and any(n.tag for n in nets):
        raise BadRequest("Invalid input for field/attribute tag: tags need microversion 2.32")
    requested: list[dict[str, Any]] = []
    for net in nets:
        if net.port:
            try:
                port = rt.networks.get_port(net.port)
            except NotFound:
                raise BadRequest(f"Port id {net.port} could not be found.") from None
            if port.get("device_id"):
                raise Conflict(f"Port {net.port} is still in use.")
            if not ctx.is_admin and port.get("project_id") not in (None, ctx.project_id):
                raise BadRequest(f"Port id {net.port} could not be found.")
            requested.append(
                {"port_id": net.port, "network_id": port["network_id"], "tag": net.tag}
            )
        elif net.uuid:
            try:
                rt.networks.get_network(net.uuid)
            except NotFound:
                raise BadRequest(f"Network {net.uuid} could not be found.") from None
            requested.append({"port_id": None, "network_id": net.uuid, "tag": net.tag})
        else:
            raise BadRequest("Invalid input for field/attribute networks: each needs uuid or port")
    ports = [r["port_id"] for r in requested if r["port_id"]]
    if len(ports) != len(set(ports)):
        raise BadRequest("Duplicate port in the networks request.")
    return requested


def _resolve_block_devices(
    rt: Runtime, ctx: RequestContext, server: ServerCreate, ver: Any
) -> tuple[list[dict[str, Any]], bool]:
    """The BDM rows to create and whether the server boots from a volume."""
    rows: list[dict[str, Any]] = []
    volume_backed = False
    for index, bdm in enumerate(server.block_device_mapping_v2 or []):
        if bdm.tag and ver < "2.32":
            raise BadRequest("Invalid input for field/attribute tag: BDM tags need 2.32")
        source = bdm.source_type or "volume"
        dest = bdm.destination_type or ("volume" if source != "blank" else "local")
        boot_index = bdm.boot_index
        if source == "image" and dest == "local":
            continue  # the image-backed root disk, described by imageRef
        if dest != "volume":
            raise BadRequest(
                f"block_device_mapping_v2[{index}]: only volume destinations "
                "and the image root disk are supported"
            )
        volume_id = bdm.uuid
        if source == "volume":
            if not volume_id:
                raise BadRequest(f"block_device_mapping_v2[{index}]: uuid of the volume needed")
            try:
                volume = rt.volumes.get(volume_id)
            except NotFound:
                raise BadRequest(f"Volume {volume_id} could not be found.") from None
            if volume["status"] != "available":
                raise BadRequest(
                    f"Invalid volume: volume {volume_id} status must be "
                    f"'available', not '{volume['status']}'"
                )
        elif source in ("image", "blank"):
            if not bdm.volume_size:
                raise BadRequest(f"block_device_mapping_v2[{index}]: volume_size is needed")
            image_id = bdm.uuid if source == "image" else None
            if image_id:
                _check_image(rt, image_id)
            volume = rt.volumes.create(
                bdm.volume_size,
                project_id=ctx.project_id,
                image_id=image_id,
                bootable=source == "image",
                name=f"{server.name}-vol{index}",
            )
            volume_id = volume["id"]
        else:
            raise BadRequest(
                f"block_device_mapping_v2[{index}]: source_type {source} is not supported"
            )
        if boot_index == 0:
            volume_backed = True
        rows.append(
            {
                "source_type": "volume",
                "destination_type": "volume",
                "volume_id": volume_id,
                "boot_index": boot_index,
                "volume_size": bdm.volume_size,
                "delete_on_termination": bdm.delete_on_termination,
                "device_name": bdm.device_name or f"/dev/vd{chr(ord('a') + len(rows))}",
                "tag": bdm.tag,
            }
        )
    return rows, volume_backed


def _check_image(rt: Runtime, image_id: str) -> dict[str, Any]:
    try:
        image = rt.images.get(image_id)
    except NotFound:
        raise BadRequest(f"Image {image_id} could not be found.") from None
    if image["status"] != "active":
        raise BadRequest(f"Image {image_id} is not active.")
    return image


def _resolve_zone(
    rt: Runtime, ctx: RequestContext, requested: str | None
) -> tuple[str | None, str | None]:
    """The zone asked for and, for admins using "zone:host", the host."""
    if not requested:
        return None, None
    zone, _, host = requested.partition(":")
    if host and not ctx.is_admin:
        raise BadRequest("Only admins may choose a host with availability_zone 'zone:host'.")
    zones = set(list_zones(rt.settings.api_db)) | {rt.settings.default_availability_zone}
    if zone and zone not in zones:
        raise BadRequest(f"The requested availability zone is not available: {zone}")
    return zone or None, host or None


def _password() -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(12))


def _hostname(name: str) -> str:
    cleaned = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    return cleaned[:63] or "server"


@router.post("/servers", status_code=202)
def create_server(
    body: CreateServerBody,
    request: Request,
    response: Response,
    rt: RuntimeDep,
    ctx: ContextDep,
    ver: VersionDep,
) -> dict[str, Any]:
    policy.authorize(ctx, "os_compute_api:servers:create")
    server = body.server
    hints = body.hints()
    if server.description is not None and ver < "2.19":
        raise BadRequest("Invalid input for field/attribute description (needs 2.19)")
    if server.tags is not None and ver < "2.52":
        raise BadRequest("Invalid input for field/attribute tags (needs 2.52)")
    if server.hostname is not None and ver < "2.90":
        raise BadRequest("Invalid input for field/attribute hostname (needs 2.90)")
    if (server.host or server.hypervisor_hostname) and ver < "2.74":
        raise BadRequest("Invalid input for field/attribute host (needs 2.74)")
    if (server.host or server.hypervisor_hostname) and not ctx.is_admin:
        policy.authorize(ctx, "compute:servers:create:requested_destination")
    try:
        flavor = flavors.get(rt.settings.api_db, str(server.flavorRef))
    except NotFound as exc:
        raise BadRequest(exc.message) from None
    requested_networks = _resolve_networks(rt, ctx, server, ver)
    zone, forced_host = _resolve_zone(rt, ctx, server.availability_zone)
    key_data = None
    if server.key_name:
        with session_scope(rt.settings.api_db) as s:
            key_data = s.scalar(
                select(KeyPair.public_key).where(
                    KeyPair.name == server.key_name, KeyPair.user_id == ctx.user_id
                )
            )
        if key_data is None:
            raise BadRequest("Invalid key_name provided.")
    group_uuid = hints.get("group")
    if group_uuid is not None:
        with session_scope(rt.settings.api_db) as s:
            group = s.scalar(select(InstanceGroup).where(InstanceGroup.uuid == str(group_uuid)))
            if group is None or (not ctx.is_admin and group.project_id != ctx.project_id):
                raise BadRequest(f"Invalid server group {group_uuid}: it does not exist.")
    count = server.max_count or server.min_count
    if server.max_count is not None and server.max_count < server.min_count:
        raise BadRequest("min_count must be <= max_count")
    QuotaEngine(rt).check_deltas(
        ctx.project_id,
        {"instances": count, "cores": flavor["vcpus"] * count, "ram": flavor["memory_mb"] * count},
    )
    bdms, volume_backed = _resolve_block_devices(rt, ctx, server, ver)
    image: dict[str, Any] | None = None
    if not volume_backed:
        if not server.imageRef:
            raise BadRequest(
                "Invalid input for field/attribute imageRef: an image is needed "
                "unless a volume with boot_index 0 is given"
            )
        image = _check_image(rt, server.imageRef.rstrip("/").rsplit("/", 1)[-1])
        if flavor["root_gb"] and image.get("min_disk", 0) > flavor["root_gb"]:
            raise BadRequest("Flavor's disk is too small for requested image.")
    if count > 1 and any(r["port_id"] for r in requested_networks):
        raise BadRequest("Multiple servers cannot share one pre-existing port.")
    admin_pass = server.adminPass or _password()
    created: list[str] = []
    reservation_id = f"r-{secrets.token_hex(4)}"
    for index in range(count):
        instance_uuid = str(uuidlib.uuid4())
        name = server.name if count == 1 else f"{server.name}-{index + 1}"
        data = {
            "uuid": instance_uuid,
            "display_name": name,
            "display_description": server.description,
            "hostname": server.hostname or _hostname(name),
            "project_id": ctx.project_id,
            "user_id": ctx.user_id,
            "flavor": flavor,
            "image_ref": image["id"] if image else "",
            "key_name": server.key_name,
            "key_data": key_data,
            "metadata": server.metadata or {},
            "user_data": server.user_data,
            "config_drive": "True" if server.config_drive in (True, "True", "true") else "",
            "access_ip_v4": server.accessIPv4,
            "access_ip_v6": server.accessIPv6,
            "availability_zone": zone,
            "launch_index": index,
            "reservation_id": reservation_id,
            "requested_networks": requested_networks,
        }
        spec = {
            "instance_uuid": instance_uuid,
            "project_id": ctx.project_id,
            "user_id": ctx.user_id,
            "flavor": flavor,
            "image": (
                {
                    "id": image["id"],
                    "min_disk": image.get("min_disk", 0),
                    "min_ram": image.get("min_ram", 0),
                }
                if image
                else None
            ),
            "is_volume_backed": volume_backed,
            "availability_zone": zone,
            "group_uuid": str(group_uuid) if group_uuid else None,
            "scheduler_hints": hints,
            "requested_destination": (
                {"host": forced_host or server.host, "cell": None}
                if (forced_host or server.host)
                else None
            ),
        }
        with session_scope(rt.settings.api_db) as s:
            s.add(
                InstanceMapping(
                    instance_uuid=instance_uuid,
                    project_id=ctx.project_id,
                    user_id=ctx.user_id,
                    cell_id=None,
                )
            )
            s.add(
                BuildRequest(
                    instance_uuid=instance_uuid,
                    project_id=ctx.project_id,
                    instance=data,
                    block_device_mappings=bdms if index == 0 else [],
                    tags=list(server.tags or []),
                )
            )
            s.add(RequestSpec(instance_uuid=instance_uuid, spec=spec))
            if group_uuid:
                group_row = s.scalar(
                    select(InstanceGroup).where(InstanceGroup.uuid == str(group_uuid))
                )
                s.add(
                    InstanceGroupMember(
                        group_id=group_row.id,  # type: ignore[union-attr]
                        instance_uuid=instance_uuid,
                    )
                )
        created.append(instance_uuid)
    for instance_uuid in created:
        engine.start(
            build.build_server, build.workflow_id(instance_uuid), ctx.to_dict(), instance_uuid
        )
    if server.return_reservation_id:
        return {"reservation_id": reservation_id}
    first = created[0]
    base = base_url(request)
    response.headers["Location"] = f"{base}/v2.1/{ctx.project_id}/servers/{first}"
    return {
        "server": {
            "id": first,
            "links": view.links(base, ctx.project_id, "servers", first),
            "OS-DCF:diskConfig": "MANUAL",
            "security_groups": [{"name": "default"}],
            "adminPass": admin_pass,
        }
    }


# ---------------------------------------------------------------- read


class _Addresses:
    """Port and network names for many servers, read once per request."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._ports: dict[str, dict[str, Any]] | None = None
        self._names: dict[str, str] | None = None

    def of(self, record: ServerRecord) -> dict[str, list[dict[str, Any]]]:
        if not record.vifs:
            return {}
        if self._ports is None:
            self._ports = {}
            for vif in record.vifs:
                try:
                    self._ports[vif["port_id"]] = self.rt.networks.get_port(vif["port_id"])
                except NotFound:
                    continue
        missing = [v["port_id"] for v in record.vifs if v["port_id"] not in self._ports]
        for port_id in missing:
            try:
                self._ports[port_id] = self.rt.networks.get_port(port_id)
            except NotFound:
                continue
        if self._names is None:
            self._names = {n["id"]: n["name"] for n in self.rt.networks.list_networks()}
        return view.addresses(record, self._ports, self._names)

    def preload(self, records: list[ServerRecord]) -> None:
        if sum(len(r.vifs) for r in records) > 5:
            self._ports = {p["id"]: p for p in self.rt.networks.list_ports()}


class _Renderer:
    """Renders many servers for one request, reading shared data once, not per server."""

    def __init__(self, rt: Runtime, request: Request, ctx: RequestContext, ver: Any) -> None:
        self.rt, self.request, self.ctx, self.ver = rt, request, ctx, ver
        self.addrs = _Addresses(rt)
        self._images: dict[str, dict[str, Any] | None] = {}
        self._extra_specs: dict[str, bool] = {}
        self._host_status: dict[tuple[str, str], str] = {}

    def prepare(self, records: list[ServerRecord]) -> None:
        self.addrs.preload(records)
        if self.ver >= "2.96":
            _add_spec_fields(self.rt, records)
        if self.ver >= "2.16" and self.ctx.is_admin:
            self._host_status.update(_host_statuses(self.rt, records))

    def _image(self, image_id: str) -> dict[str, Any] | None:
        if image_id not in self._images:
            try:
                self._images[image_id] = self.rt.images.get(image_id)
            except NotFound:
                self._images[image_id] = None
        return self._images[image_id]

    def _show_specs(self, project_id: str) -> bool:
        if project_id not in self._extra_specs:
            self._extra_specs[project_id] = policy.check(
                self.ctx, "os_compute_api:os-flavor-extra-specs:index", {"project_id": project_id}
            )
        return self._extra_specs[project_id]

    def render(self, record: ServerRecord) -> dict[str, Any]:
        ver = self.ver
        image = self._image(record.image_ref) if ver >= "2.98" and record.image_ref else None
        host_status = None
        if ver >= "2.16" and self.ctx.is_admin:
            host_status = self._host_status.get(_host_key(record), "")
        return view.detail(
            record,
            ver=ver,
            base=base_url(self.request),
            is_admin=self.ctx.is_admin,
            addrs=self.addrs.of(record),
            image=image,
            show_extra_specs=ver >= "2.47" and self._show_specs(record.project_id),
            host_status=host_status,
        )


def _render(
    rt: Runtime, request: Request, ctx: RequestContext, ver: Any, record: ServerRecord
) -> dict[str, Any]:
    renderer = _Renderer(rt, request, ctx, ver)
    renderer.prepare([record])
    return renderer.render(record)


def _host_key(record: ServerRecord) -> tuple[str, str]:
    return (record.cell.name if record.cell else "", record.host or "")


def _host_statuses(rt: Runtime, records: list[ServerRecord]) -> dict[tuple[str, str], str]:
    """UP / DOWN / MAINTENANCE / UNKNOWN of each record's host: one query per cell."""
    from atoll.db.cell_models import Service

    out: dict[tuple[str, str], str] = {}
    by_cell: dict[str, tuple[Any, set[str]]] = {}
    for record in records:
        if record.cell is not None and record.host:
            by_cell.setdefault(record.cell.name, (record.cell, set()))[1].add(record.host)
        else:
            out[_host_key(record)] = ""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    for cell_name, (cell, hosts) in by_cell.items():
        with session_scope(cell.db_url) as s:
            rows = s.execute(
                select(
                    Service.host, Service.forced_down, Service.disabled, Service.last_seen_up
                ).where(
                    Service.host.in_(hosts),
                    Service.deleted == 0,
                    Service.binary == "nova-compute",
                )
            ).all()
        seen: dict[str, str] = {}
        for host, forced_down, disabled, last_seen in rows:
            if forced_down:
                seen[host] = "DOWN"
            elif disabled:
                seen[host] = "MAINTENANCE"
            elif last_seen is None:
                seen[host] = "UNKNOWN"
            else:
                age = (now - last_seen).total_seconds()
                seen[host] = "UP" if age <= rt.settings.timeouts.service_down_after else "DOWN"
        for host in hosts:
            out[(cell_name, host)] = seen.get(host, "UNKNOWN")
    return out


def _add_spec_fields(rt: Runtime, records: list[ServerRecord]) -> None:
    """The requested zone and scheduler hints (2.96 / 2.100), one query for all."""
    if not records:
        return
    with session_scope(rt.settings.api_db) as s:
        specs = dict(
            s.execute(
                select(RequestSpec.instance_uuid, RequestSpec.spec).where(
                    RequestSpec.instance_uuid.in_([r.uuid for r in records])
                )
            ).all()
        )
    for record in records:
        spec = specs.get(record.uuid)
        if spec:
            record.requested_az = spec.get("availability_zone")
            record.scheduler_hints = dict(spec.get("scheduler_hints") or {})


SORT_KEYS = {
    "created_at": "created_at",
    "display_name": "name",
    "uuid": "uuid",
    "updated_at": "updated_at",
    "vm_state": "vm_state",
    "task_state": "task_state",
    "power_state": "power_state",
    "host": "host",
    "node": "node",
    "launched_at": "launched_at",
    "availability_zone": "availability_zone",
    "project_id": "project_id",
    "user_id": "user_id",
    "hostname": "hostname",
    "key_name": "key_name",
    "locked": "locked",
}
ADMIN_SORT_KEYS = {"host", "node"}


def _parse_time(value: str, field: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid filter field: {field}. '{value}' is not a valid time") from None
    if parsed.tzinfo is not None:
        parsed = parsed.astimezone(dt.UTC).replace(tzinfo=None)
    return parsed


def _filtered(
    rt: Runtime, request: Request, ctx: RequestContext, ver: Any
) -> tuple[list[ServerRecord], list[DownCellServer], dict[str, Any]]:
    params = request.query_params
    all_tenants = "all_tenants" in params and params.get("all_tenants", "1").lower() not in (
        "0",
        "false",
        "no",
    )
    if all_tenants:
        policy.authorize(ctx, "os_compute_api:servers:index:get_all_tenants")
    project = params.get("project_id") or params.get("tenant_id")
    if project and not ctx.is_admin:
        project = None
    if project and not all_tenants:
        all_tenants = True
    deleted = params.get("deleted", "false").lower() in ("true", "1", "yes") and ctx.is_admin
    query = ListQuery(project_id=None if all_tenants else ctx.project_id, deleted=deleted)
    if project:
        query.project_id = project
    if "changes-since" in params:
        query.changes_since = _parse_time(params["changes-since"], "changes-since")
    if "changes-before" in params and ver >= "2.66":
        query.changes_before = _parse_time(params["changes-before"], "changes-before")
        if query.changes_since and query.changes_since > query.changes_before:
            raise BadRequest(
                "The value of changes-since must be less than or equal to changes-before."
            )
    records, down = list_servers(rt, query, with_groups=ver >= "2.71")
    preds = []
    if "name" in params:
        try:
            pattern = re.compile(params["name"])
        except re.error:
            raise BadRequest(f"Invalid filter field: name. {params['name']!r}") from None
        preds.append(lambda r: pattern.search(r.name) is not None)
    if "status" in params:
        wanted = {s.upper() for s in params.getlist("status")}
        for status in wanted:
            if view.vm_states_for_status(status) is None and status != "UNKNOWN":
                raise BadRequest(f"Invalid status value: {status}")
        preds.append(lambda r: view.status_of(r.vm_state, r.task_state) in wanted)
    if "host" in params and ctx.is_admin:
        preds.append(lambda r: r.host == params["host"])
    if "node" in params and ctx.is_admin:
        preds.append(lambda r: r.node == params["node"])
    if "image" in params:
        image_id = params["image"].rstrip("/").rsplit("/", 1)[-1]
        preds.append(lambda r: r.image_ref == image_id)
    if "flavor" in params:
        flavor_id = params["flavor"].rstrip("/").rsplit("/", 1)[-1]
        preds.append(lambda r: str(r.flavor.get("flavorid")) == flavor_id)
    if "availability_zone" in params:
        preds.append(lambda r: r.availability_zone == params["availability_zone"])
    if "user_id" in params and ctx.is_admin:
        preds.append(lambda r: r.user_id == params["user_id"])
    if "locked" in params and ver >= "2.73":
        locked = params["locked"].lower() in ("true", "1", "yes")
        preds.append(lambda r: r.locked == locked)
    if "ip" in params:
        ip_pattern = re.compile(params["ip"])
        addrs = _Addresses(rt)
        preds.append(
            lambda r: any(ip_pattern.search(a["addr"]) for net in addrs.of(r).values() for a in net)
        )
    if ver >= "2.26":
        for key, mode in (("tags", all), ("tags-any", any)):
            if key in params:
                tags = [t for t in params[key].split(",") if t]
                preds.append(lambda r, tags=tags, mode=mode: mode(t in r.tags for t in tags))
        for key, mode in (("not-tags", all), ("not-tags-any", any)):
            if key in params:
                tags = [t for t in params[key].split(",") if t]
                preds.append(lambda r, tags=tags, mode=mode: not mode(t in r.tags for t in tags))
    records = [r for r in records if all(p(r) for p in preds)]
    records = _sort(records, params, ctx)
    return records, down, {"all_tenants": all_tenants}


def _sort(records: list[ServerRecord], params: Any, ctx: RequestContext) -> list[ServerRecord]:
    keys = params.getlist("sort_key") or ["created_at"]
    dirs = params.getlist("sort_dir") or ["desc"]
    for key in keys:
        if key not in SORT_KEYS or (key in ADMIN_SORT_KEYS and not ctx.is_admin):
            raise BadRequest(f"Invalid sort_key: {key}")
    for direction in dirs:
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort_dir: {direction} (use asc or desc)")
    pairs = [(k, dirs[i] if i < len(dirs) else dirs[-1]) for i, k in enumerate(keys)]
    pairs.append(("uuid", pairs[0][1]))
    for key, direction in reversed(pairs):
        attr = SORT_KEYS[key]
        records.sort(key=lambda r, a=attr: _sortable(getattr(r, a)), reverse=direction == "desc")
    return records


def _sortable(value: Any) -> tuple[int, Any]:
    return (0, "") if value is None else (1, value)


def _page(request: Request, records: list[Any], kind: str) -> tuple[list[Any], list[dict]]:
    params = request.query_params
    marker = params.get("marker")
    if marker:
        ids = [r.uuid for r in records]
        if marker not in ids:
            raise BadRequest(f"marker [{marker}] not found")
        records = records[ids.index(marker) + 1 :]
    limit = None
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise BadRequest("limit param must be an integer") from None
        if limit < 0:
            raise BadRequest("limit param must be positive")
    links: list[dict[str, str]] = []
    if limit is not None and len(records) > limit:
        records = records[:limit]
        if records:
            query = dict(params)
            query["marker"] = records[-1].uuid
            qs = "&".join(f"{k}={v}" for k, v in query.items())
            links = [{"href": f"{base_url(request)}/v2.1/{kind}?{qs}", "rel": "next"}]
    return records, links


def _listing(
    request: Request, rt: Runtime, ctx: RequestContext, ver: Any, *, detail: bool
) -> dict[str, Any]:
    policy.authorize(ctx, f"os_compute_api:servers:{'detail' if detail else 'index'}")
    records, down, _ = _filtered(rt, request, ctx, ver)
    items: list[Any] = list(records)
    if ver >= "2.69":
        items.extend(down)
    items, links = _page(request, items, "servers/detail" if detail else "servers")
    base = base_url(request)
    renderer = _Renderer(rt, request, ctx, ver)
    if detail:
        renderer.prepare([i for i in items if isinstance(i, ServerRecord)])
    out = []
    for item in items:
        if isinstance(item, DownCellServer):
            out.append(view.down_cell(item, base, detail=detail))
        elif detail:
            out.append(renderer.render(item))
        else:
            out.append(view.brief(item, base))
    body: dict[str, Any] = {"servers": out}
    if links:
        body["servers_links"] = links
    return body


@router.get("/servers")
def list_index(
    request: Request, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> dict[str, Any]:
    return _listing(request, rt, ctx, ver, detail=False)


@router.get("/servers/detail")
def list_detail(
    request: Request, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> dict[str, Any]:
    return _listing(request, rt, ctx, ver, detail=True)


def _down_cell_show(
    rt: Runtime, request: Request, ctx: RequestContext, uuid: str
) -> dict[str, Any]:
    with session_scope(rt.settings.api_db) as s:
        mapping = s.scalar(select(InstanceMapping).where(InstanceMapping.instance_uuid == uuid))
        spec = s.scalar(select(RequestSpec.spec).where(RequestSpec.instance_uuid == uuid))
        if mapping is None or (not ctx.is_admin and mapping.project_id != ctx.project_id):
            raise NotFound(f"Instance {uuid} could not be found.")
        created = mapping.created_at
        project_id = mapping.project_id
        user_id = mapping.user_id
    base = base_url(request)
    flavor = (spec or {}).get("flavor") or {}
    image = (spec or {}).get("image") or {}
    return {
        "OS-EXT-AZ:availability_zone": "UNKNOWN",
        "OS-EXT-STS:power_state": 0,
        "created": view.isotime(created),
        "flavor": {
            "disk": flavor.get("root_gb"),
            "ephemeral": flavor.get("ephemeral_gb"),
            "extra_specs": flavor.get("extra_specs", {}),
            "original_name": flavor.get("name"),
            "ram": flavor.get("memory_mb"),
            "swap": flavor.get("swap"),
            "vcpus": flavor.get("vcpus"),
        },
        "id": uuid,
        "image": (
            {"id": image["id"], "links": view.bookmark(base, project_id, "images", image["id"])}
            if image
            else ""
        ),
        "status": "UNKNOWN",
        "tenant_id": project_id,
        "user_id": user_id,
        "links": view.links(base, project_id, "servers", uuid),
    }


@router.get("/servers/{server_id}")
def show(
    server_id: str, request: Request, rt: RuntimeDep, ctx: ContextDep, ver: VersionDep
) -> dict[str, Any]:
    try:
        record = get_server(rt, ctx, server_id, with_groups=ver >= "2.71")
    except SQLAlchemyError:
        if ver >= "2.69":
            return {"server": _down_cell_show(rt, request, ctx, server_id)}
        raise
    policy.authorize(ctx, "os_compute_api:servers:show", {"project_id": record.project_id})
    return {"server": _render(rt, request, ctx, ver, record)}


@router.put("/servers/{server_id}")
def update(
    server_id: str,
    body: UpdateServerBody,
    request: Request,
    rt: RuntimeDep,
    ctx: ContextDep,
    ver: VersionDep,
) -> dict[str, Any]:
    record = get_server(rt, ctx, server_id)
    policy.authorize(ctx, "os_compute_api:servers:update", {"project_id": record.project_id})
    if record.cell is None:
        raise Conflict(f"Server {server_id} is still being scheduled; update it when it is placed.")
    changes = body.server
    values: dict[str, Any] = {}
    if changes.name is not None:
        values["display_name"] = changes.name
    if "description" in changes.model_fields_set:
        if ver < "2.19":
            raise BadRequest("Invalid input for field/attribute description (needs 2.19)")
        values["display_description"] = changes.description
    if changes.accessIPv4 is not None:
        values["access_ip_v4"] = changes.accessIPv4
    if changes.accessIPv6 is not None:
        values["access_ip_v6"] = changes.accessIPv6
    if changes.hostname is not None:
        if ver < "2.90":
            raise BadRequest("Invalid input for field/attribute hostname (needs 2.90)")
        values["hostname"] = changes.hostname
    if values:
        instances.save(record.cell.db_url, server_id, **values)
    record = get_server(rt, ctx, server_id, with_groups=ver >= "2.71")
    return {"server": _render(rt, request, ctx, ver, record)}


# ---------------------------------------------------------------- delete


@router.delete("/servers/{server_id}", status_code=204)
def delete_server(server_id: str, rt: RuntimeDep, ctx: ContextDep) -> Response:
    record = get_server(rt, ctx, server_id)
    policy.authorize(ctx, "os_compute_api:servers:delete", {"project_id": record.project_id})
    if record.cell is None:
        # not placed yet: dropping the build request stops the build at its next step
        with session_scope(rt.settings.api_db) as s:
            br = s.scalar(select(BuildRequest).where(BuildRequest.instance_uuid == server_id))
            if br is not None:
                s.delete(br)
                mapping = s.scalar(
                    select(InstanceMapping).where(InstanceMapping.instance_uuid == server_id)
                )
                if mapping is not None and mapping.cell_id is None:
                    mapping.queued_for_delete = True
                return Response(status_code=204)
        record = get_server(rt, ctx, server_id)
    cell_db = record.cell.db_url  # type: ignore[union-attr]
    if record.locked and not ctx.is_admin:
        raise Conflict(f"Instance {server_id} is locked")
    instances.save(
        cell_db,
        server_id,
        expected_task_state=_deletable_task_states(record),
        task_state="deleting",
    )
    actions.start_action(cell_db, ctx, server_id, "delete")
    engine.start(
        delete.delete_server,
        delete.workflow_id(server_id, ctx.request_id),
        ctx.to_dict(),
        server_id,
    )
    return Response(status_code=204)


def _deletable_task_states(record: ServerRecord) -> tuple[Any, ...]:
    if record.task_state == "deleting":
        raise Conflict(f"Server {record.uuid} is already being deleted.")
    # a delete may interrupt a build or a power action, not a move (that has its own undo)
    return (
        None,
        "spawning",
        "scheduling",
        "powering-off",
        "powering-on",
        "rebooting",
        "rebooting_hard",
    )
