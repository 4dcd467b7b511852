"""`atoll audit`: prove nothing leaked.

Each check compares two sources of truth that must agree (placement and the
cells, hypervisors and the cells, the volume and network services and the
cells, the instance mappings and the cells) and reports every disagreement as
a ``Problem`` an operator can act on.  The audit only reads.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from atoll.cells import Cell
from atoll.context import RequestContext
from atoll.db.api_models import InstanceMapping
from atoll.db.cell_models import BlockDeviceMapping, Instance, Migration
from atoll.db.session import session_scope
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)

# a server in these states must have its guest on its host
STATES_WITH_GUEST = ("active", "stopped", "resized")
# a migration in one of these is over: it may hold nothing any more
DONE_MIGRATION = ("confirmed", "reverted", "error", "failed", "done", "completed", "cancelled")


@dataclass(frozen=True)
class Problem:
    kind: str
    resource: str
    detail: str


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems

    def add(self, kind: str, resource: str, detail: str) -> None:
        self.problems.append(Problem(kind, resource, detail))

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "problems": [asdict(p) for p in self.problems],
            "checked": self.checked,
        }


@dataclass
class LiveServer:
    uuid: str
    cell: Cell
    host: str | None
    vm_state: str
    task_state: str | None
    flavor: dict[str, Any]
    volume_backed: bool
    ports: list[str] = field(default_factory=list)


def expected_resources(flavor: dict[str, Any], volume_backed: bool) -> dict[str, int]:
    disk = flavor.get("ephemeral_gb", 0) + -(-int(flavor.get("swap", 0)) // 1024)
    if not volume_backed:
        disk += flavor.get("root_gb", 0)
    out = {"VCPU": flavor["vcpus"], "MEMORY_MB": flavor["memory_mb"]}
    if disk:
        out["DISK_GB"] = disk
    return out


@dataclass
class OpenMigration:
    uuid: str
    instance_uuid: str
    status: str
    source: str | None
    dest: str | None


class Auditor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.report = Report()
        self.servers: dict[str, LiveServer] = {}
        self.reachable_cells: list[Cell] = []
        self.migrations: dict[str, OpenMigration] = {}
        self.hidden: list[tuple[Cell, str]] = []

    def hosts_of(self, server: LiveServer) -> set[str | None]:
        """Where a server may hold things: its host, plus both ends of an open move."""
        hosts: set[str | None] = {server.host}
        for m in self.migrations.values():
            if m.instance_uuid == server.uuid:
                hosts |= {m.source, m.dest}
        return hosts

    def run(self) -> Report:
        self._load_servers()
        self._check_copies()
        self._check_hidden_copies()
        self._check_snapshots()
        self._check_allocations()
        self._check_guests()
        self._check_attachments()
        self._check_bindings()
        return self.report

    # -- loading
    def _load_servers(self) -> None:
        from atoll.db.cell_models import VirtualInterface

        for cell in self.rt.cells.refresh():
            try:
                with session_scope(cell.db_url) as s:
                    rows = s.scalars(
                        select(Instance).where(Instance.deleted == 0, Instance.hidden.is_(False))
                    ).all()
                    bfv = set(
                        s.scalars(
                            select(BlockDeviceMapping.instance_uuid).where(
                                BlockDeviceMapping.deleted == 0,
                                BlockDeviceMapping.boot_index == 0,
                                BlockDeviceMapping.destination_type == "volume",
                            )
                        )
                    )
                    hidden = s.scalars(
                        select(Instance.uuid).where(
                            Instance.deleted == 0, Instance.hidden.is_(True)
                        )
                    ).all()
                    open_moves = s.scalars(
                        select(Migration).where(
                            Migration.deleted == 0,
                            Migration.hidden.is_(False),
                            Migration.status.not_in(DONE_MIGRATION),
                        )
                    ).all()
                    ports = defaultdict(list)
                    for uuid, port in s.execute(
                        select(VirtualInterface.instance_uuid, VirtualInterface.uuid).where(
                            VirtualInterface.deleted == 0
                        )
                    ):
                        ports[uuid].append(port)
            except SQLAlchemyError as exc:
                self.report.add(
                    "cell_unreachable",
                    cell.name,
                    f"cannot read the cell DB: {exc.__class__.__name__}; "
                    "nothing in it was verified",
                )
                continue
            self.reachable_cells.append(cell)
            self.hidden.extend((cell, uuid) for uuid in hidden)
            for m in open_moves:
                self.migrations[m.uuid] = OpenMigration(
                    m.uuid, m.instance_uuid, m.status, m.source_compute, m.dest_compute
                )
            for row in rows:
                if row.uuid in self.servers:
                    other = self.servers[row.uuid].cell.name
                    self.report.add(
                        "duplicate_copy", row.uuid, f"visible in both {other} and {cell.name}"
                    )
                    continue
                self.servers[row.uuid] = LiveServer(
                    uuid=row.uuid,
                    cell=cell,
                    host=row.host,
                    vm_state=row.vm_state,
                    task_state=row.task_state,
                    flavor=row.flavor["cur"],
                    volume_backed=row.uuid in bfv,
                    ports=ports.get(row.uuid, []),
                )
        self.report.checked["servers"] = len(self.servers)

    # -- invariants
    def _check_hidden_copies(self) -> None:
        """A hidden copy lives only as long as the move that made it."""
        moving = {m.instance_uuid for m in self.migrations.values()}
        for cell, uuid in self.hidden:
            if uuid not in moving:
                self.report.add(
                    "orphan_hidden_copy",
                    uuid,
                    f"hidden copy in {cell.name} with no move in progress",
                )
        self.report.checked["hidden_copies"] = len(self.hidden)

    def _check_snapshots(self) -> None:
        """A move's temporary snapshot lives only until the move has finished with it."""
        count = 0
        for image in self.rt.images.list():
            props = image.get("properties") or {}
            if props.get("atoll_temporary") != "true":
                continue
            count += 1
            migration = self.migrations.get(props.get("atoll_move_migration", ""))
            if migration is None or migration.status not in ("pre-migrating", "migrating"):
                self.report.add(
                    "leaked_snapshot",
                    image["id"],
                    f"temporary snapshot of {props.get('instance_uuid')} outlived its move",
                )
        self.report.checked["temporary_snapshots"] = count

    def _check_copies(self) -> None:
        """Each mapped server has its one visible copy in the cell its mapping names."""
        with session_scope(self.rt.settings.api_db) as s:
            mappings = s.execute(
                select(InstanceMapping.instance_uuid, InstanceMapping.cell_id).where(
                    InstanceMapping.queued_for_delete.is_(False)
                )
            ).all()
        reachable = {c.id for c in self.reachable_cells}
        mapped = set()
        for uuid, cell_id in mappings:
            mapped.add(uuid)
            if cell_id is None or cell_id not in reachable:
                continue
            server = self.servers.get(uuid)
            if server is None:
                self.report.add(
                    "missing_copy",
                    uuid,
                    f"mapped to cell {self.rt.cells.by_id(cell_id).name} but no "
                    "visible copy is there",
                )
            elif server.cell.id != cell_id:
                self.report.add(
                    "wrong_cell",
                    uuid,
                    f"visible in {server.cell.name} but mapped to "
                    f"{self.rt.cells.by_id(cell_id).name}",
                )
        for uuid, server in self.servers.items():
            if uuid not in mapped:
                self.report.add(
                    "unmapped_copy",
                    uuid,
                    f"visible in {server.cell.name} with no live instance mapping",
                )

    def _check_allocations(self) -> None:
        consumers = self.rt.placement.all_consumers()
        providers = {p.uuid: p.name for p in self.rt.placement.list_providers()}
        self.report.checked["allocation_consumers"] = len(consumers)
        for consumer, allocs in consumers.items():
            migration = self.migrations.get(consumer)
            if migration is not None:
                hosts = {providers.get(p, p) for p in allocs}
                if hosts != {migration.source}:
                    self.report.add(
                        "misplaced_allocation",
                        consumer,
                        f"migration {migration.status} holds {sorted(hosts)}, "
                        f"not its source {migration.source}",
                    )
                continue
            server = self.servers.get(consumer)
            if server is None:
                self.report.add(
                    "orphan_allocation",
                    consumer,
                    f"allocations on {', '.join(providers.get(p, p) for p in allocs)}"
                    " for a consumer that is no live server",
                )
                continue
            want = expected_resources(server.flavor, server.volume_backed)
            hosts = {providers.get(p, p) for p in allocs}
            if hosts != {server.host}:
                self.report.add(
                    "misplaced_allocation",
                    consumer,
                    f"allocated on {sorted(hosts)} but the server is on {server.host}",
                )
            got: dict[str, int] = defaultdict(int)
            for resources in allocs.values():
                for rc, amount in resources.items():
                    got[rc] += amount
            if dict(got) != want:
                self.report.add(
                    "wrong_allocation",
                    consumer,
                    f"allocation {dict(got)} does not match the flavor's {want}",
                )
        for uuid, server in self.servers.items():
            if server.host and server.vm_state in STATES_WITH_GUEST and uuid not in consumers:
                self.report.add(
                    "missing_allocation",
                    uuid,
                    f"{server.vm_state} on {server.host} with no allocation",
                )

    def _check_guests(self) -> None:
        ctx = RequestContext.admin()
        guests_total = 0
        for host, cell in sorted(self.rt.cells.host_cells().items()):
            if cell.id not in {c.id for c in self.reachable_cells}:
                continue
            try:
                guests = self.rt.compute(cell).list_guests(ctx, host)
            except Exception as exc:
                self.report.add(
                    "host_unreachable",
                    host,
                    f"cannot list guests: {exc}; its guests were not verified",
                )
                continue
            on_host = {g["uuid"] for g in guests}
            guests_total += len(on_host)
            for uuid in on_host:
                server = self.servers.get(uuid)
                if server is None or host not in self.hosts_of(server):
                    where = "no live server" if server is None else f"server is on {server.host}"
                    self.report.add("orphan_guest", f"{host}/{uuid}", f"guest with {where}")
            for uuid, server in self.servers.items():
                if (
                    server.host == host
                    and server.vm_state in STATES_WITH_GUEST
                    and uuid not in on_host
                ):
                    self.report.add(
                        "missing_guest",
                        uuid,
                        f"{server.vm_state} on {host} but the hypervisor has no guest",
                    )
        self.report.checked["guests"] = guests_total

    def _check_attachments(self) -> None:
        attachments = self.rt.volumes.all_attachments()
        self.report.checked["volume_attachments"] = len(attachments)
        for att in attachments:
            server = self.servers.get(att["instance_uuid"])
            if server is None:
                self.report.add(
                    "orphan_attachment",
                    att["id"],
                    f"volume {att['volume_id']} attached to {att['instance_uuid']}, "
                    "which is no live server",
                )
            elif att.get("host") not in self.hosts_of(server) | {None}:
                self.report.add(
                    "misplaced_attachment",
                    att["id"],
                    f"volume {att['volume_id']} attached on {att.get('host')} but "
                    f"the server is on {server.host}",
                )

    def _check_bindings(self) -> None:
        bindings = self.rt.networks.all_bindings()
        owner = {p: s for s in self.servers.values() for p in s.ports}
        self.report.checked["port_bindings"] = len(bindings)
        for binding in bindings:
            server = owner.get(binding["port_id"])
            if server is None:
                self.report.add(
                    "orphan_binding",
                    binding["port_id"],
                    f"binding on {binding['host']} for a port of no live server",
                )
            elif binding["host"] not in self.hosts_of(server):
                self.report.add(
                    "misplaced_binding",
                    binding["port_id"],
                    f"{binding['status']} binding on {binding['host']} but the "
                    f"server is on {server.host}",
                )
            elif (
                binding["status"] != "ACTIVE"
                and server.vm_state != "error"
                and binding["host"] == server.host
                and not any(m.instance_uuid == server.uuid for m in self.migrations.values())
            ):
                self.report.add(
                    "inactive_binding",
                    binding["port_id"],
                    f"the binding on the server's host {server.host} is not active",
                )


def run_audit(rt: Runtime) -> Report:
    report = Auditor(rt).run()
    for problem in report.problems:
        LOG.warning("audit: %s %s: %s", problem.kind, problem.resource, problem.detail)
    return report
