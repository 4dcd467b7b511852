"""`atoll audit`: prove nothing leaked.

Each check compares two sources of truth that must agree (placement and the
cells, hypervisors and the cells, the volume and network services and the
cells, the instance mappings and the cells) and reports every disagreement as
a ``Problem`` an operator can act on.  The audit only reads.

Every problem has a stable ``kind`` (see ``KINDS``: what it means, whether
`atoll heal` has a repair for it, and what an operator does otherwise) and
``facts``: the ids a repair needs, so that `atoll.heal` never parses the
human-readable detail.

A move in flight legitimately holds two copies, two allocations and bindings
and attachments on two hosts; the checks accept exactly that while the move's
migration is unfinished (its status is not in ``DONE_MIGRATION``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from atoll.cells import Cell
from atoll.context import RequestContext
from atoll.db.api_models import Flavor, InstanceMapping
from atoll.db.cell_models import BlockDeviceMapping, Instance, Migration, VirtualInterface
from atoll.db.session import session_scope
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)

# a server in these states must have its guest on its host
STATES_WITH_GUEST = ("active", "stopped", "resized")
# a migration in one of these is over: it may hold nothing any more
DONE_MIGRATION = ("confirmed", "reverted", "error", "failed", "done", "completed", "cancelled")


@dataclass(frozen=True)
class Kind:
    """One kind of breach: whether `atoll heal` has a repair for it, and what a human does.

    ``repairable`` says heal knows a safe repair for the kind; heal still declines
    a particular problem when the repair is not safe there (a move in flight, a
    busy server, an unreadable cell, ...) and says why.
    """

    invariant: str
    repairable: bool
    hint: str


KINDS: dict[str, Kind] = {
    "cell_unreachable": Kind(
        "reachability",
        False,
        "bring the cell database back (check its URL with `atoll cell list`), then audit again",
    ),
    "host_unreachable": Kind(
        "reachability",
        False,
        "start the compute service of the host (or fix its cell transport), then audit again",
    ),
    "duplicate_copy": Kind(
        "copies",
        False,
        "find which copy the guest and the instance mapping match, then hard-delete the other",
    ),
    "missing_copy": Kind(
        "copies",
        False,
        "the mapped cell holds no visible copy: un-hide the right copy or point the instance "
        "mapping at the cell that holds it",
    ),
    "wrong_cell": Kind(
        "copies",
        False,
        "point the instance mapping at the cell of the visible copy, or hide that copy and "
        "un-hide the one in the mapped cell",
    ),
    "unmapped_copy": Kind(
        "copies",
        False,
        "create the instance mapping for the server (or delete the server if it was deleted)",
    ),
    "orphan_hidden_copy": Kind(
        "copies",
        True,
        "hard-delete the hidden copy once the mapped cell holds the visible one",
    ),
    "leaked_snapshot": Kind(
        "snapshots",
        True,
        "delete the temporary image once its move is confirmed, reverted or failed",
    ),
    "orphan_allocation": Kind(
        "allocations",
        True,
        "delete the consumer's allocations in placement",
    ),
    "misplaced_allocation": Kind(
        "allocations",
        True,
        "rewrite the server's allocation to its flavor on its host",
    ),
    "wrong_allocation": Kind(
        "allocations",
        True,
        "rewrite the server's allocation to its flavor on its host",
    ),
    "missing_allocation": Kind(
        "allocations",
        True,
        "claim the server's flavor on its host in placement",
    ),
    "orphan_guest": Kind(
        "guests",
        True,
        "destroy the guest once you know no server needs its disks",
    ),
    "missing_guest": Kind(
        "guests",
        False,
        "hard reboot the server: it re-creates the guest on its host",
    ),
    "orphan_attachment": Kind(
        "attachments",
        True,
        "delete the volume attachment",
    ),
    "misplaced_attachment": Kind(
        "attachments",
        True,
        "delete the attachment on the wrong host; hard reboot the server if it lost its volume",
    ),
    "orphan_binding": Kind(
        "bindings",
        True,
        "delete the port binding",
    ),
    "misplaced_binding": Kind(
        "bindings",
        True,
        "delete the binding on the wrong host; hard reboot the server if it lost its network",
    ),
    "inactive_binding": Kind(
        "bindings",
        True,
        "activate the binding on the server's host (a hard reboot does it too)",
    ),
    "stuck_workflow": Kind(
        "workflows",
        False,
        "start a conductor: it takes the workflows of a dead one over after "
        "timeouts.conductor_takeover (or restart the dead one under its --name)",
    ),
    "workflows_unreadable": Kind(
        "workflows",
        False,
        "check the workflow database (workflow_db_url) and that a conductor has created it",
    ),
}


@dataclass(frozen=True)
class Problem:
    kind: str
    resource: str
    detail: str
    # ids a repair needs (cell, host, instance, consumer, port, ...); not shown
    facts: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def repairable(self) -> bool:
        """Whether `atoll heal` has a repair for this kind (it may still decline here)."""
        kind = KINDS.get(self.kind)
        return kind is not None and kind.repairable

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "resource": self.resource,
            "detail": self.detail,
            "repairable": self.repairable,
        }


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.problems

    def add(self, kind: str, resource: str, detail: str, **facts: str | None) -> None:
        known = {k: v for k, v in facts.items() if v is not None}
        self.problems.append(Problem(kind, resource, detail, known))

    def as_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "problems": [p.as_dict() for p in self.problems],
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
    # the server's flavor record: {"cur": ..., "old": ..., "new": ...}
    flavors: dict[str, Any] = field(default_factory=dict)
    # the volume attachments its block device mappings use
    attachment_ids: set[str] = field(default_factory=set)

    @property
    def old_flavor(self) -> dict[str, Any]:
        """The flavor before a move: ``old`` after its cut-over, ``cur`` before it."""
        return self.flavors.get("old") or self.flavor


@dataclass(frozen=True)
class MappingRow:
    cell_id: int | None
    queued_for_delete: bool


def expected_resources(flavor: dict[str, Any], volume_backed: bool) -> dict[str, int]:
    disk = flavor.get("ephemeral_gb", 0) + -(-int(flavor.get("swap", 0)) // 1024)
    if not volume_backed:
        disk += flavor.get("root_gb", 0)
    out = {"VCPU": flavor["vcpus"], "MEMORY_MB": flavor["memory_mb"]}
    if disk:
        out["DISK_GB"] = disk
    return out


def total(allocs: Mapping[str, Mapping[str, int]]) -> dict[str, int]:
    """A consumer's allocations summed over providers, per resource class."""
    got: dict[str, int] = defaultdict(int)
    for resources in allocs.values():
        for rc, amount in resources.items():
            got[rc] += amount
    return dict(got)


@dataclass
class OpenMigration:
    uuid: str
    instance_uuid: str
    status: str
    source: str | None
    dest: str | None
    new_flavor_id: str | None = None


class Auditor:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.report = Report()
        self.servers: dict[str, LiveServer] = {}
        self.reachable_cells: list[Cell] = []
        self.migrations: dict[str, OpenMigration] = {}
        self.hidden: list[tuple[Cell, str]] = []
        self.mappings: dict[str, MappingRow] = {}
        # host -> uuids of its guests, for the hosts that answered
        self.guests: dict[str, set[str]] = {}
        self._flavors: dict[str, dict[str, Any] | None] = {}

    def hosts_of(self, server: LiveServer) -> set[str | None]:
        """Where a server may hold things: its host, plus both ends of an open move."""
        hosts: set[str | None] = {server.host}
        for m in self.open_moves(server.uuid):
            hosts |= {m.source, m.dest}
        return hosts

    def open_moves(self, instance_uuid: str) -> list[OpenMigration]:
        return [m for m in self.migrations.values() if m.instance_uuid == instance_uuid]

    def run(self) -> Report:
        self._load_mappings()
        self._load_servers()
        self._check_copies()
        self._check_hidden_copies()
        self._check_snapshots()
        self._check_allocations()
        self._check_guests()
        self._check_attachments()
        self._check_bindings()
        self._check_workflows()
        return self.report

    # -- loading
    def _load_mappings(self) -> None:
        with session_scope(self.rt.settings.api_db) as s:
            rows = s.execute(
                select(
                    InstanceMapping.instance_uuid,
                    InstanceMapping.cell_id,
                    InstanceMapping.queued_for_delete,
                )
            ).all()
        self.mappings = {uuid: MappingRow(cell_id, bool(gone)) for uuid, cell_id, gone in rows}

    def _load_servers(self) -> None:
        for cell in self.rt.cells.refresh():
            try:
                self._load_cell(cell)
            except SQLAlchemyError as exc:
                self.report.add(
                    "cell_unreachable",
                    cell.name,
                    f"cannot read the cell DB: {exc.__class__.__name__}; "
                    "nothing in it was verified",
                    cell=cell.name,
                )
                continue
            self.reachable_cells.append(cell)
        self.report.checked["servers"] = len(self.servers)

    def _load_cell(self, cell: Cell) -> None:
        """Read one cell: its visible servers, hidden copies and unfinished migrations."""
        with session_scope(cell.db_url) as s:
            rows = s.scalars(
                select(Instance).where(Instance.deleted == 0, Instance.hidden.is_(False))
            ).all()
            bdms: dict[str, list[Any]] = defaultdict(list)
            for bdm in s.execute(
                select(
                    BlockDeviceMapping.instance_uuid,
                    BlockDeviceMapping.boot_index,
                    BlockDeviceMapping.destination_type,
                    BlockDeviceMapping.attachment_id,
                ).where(BlockDeviceMapping.deleted == 0)
            ):
                bdms[bdm.instance_uuid].append(bdm)
            hidden = s.scalars(
                select(Instance.uuid).where(Instance.deleted == 0, Instance.hidden.is_(True))
            ).all()
            open_moves = s.scalars(
                select(Migration).where(
                    Migration.deleted == 0,
                    Migration.hidden.is_(False),
                    Migration.status.not_in(DONE_MIGRATION),
                )
            ).all()
            ports: dict[str, list[str]] = defaultdict(list)
            for uuid, port in s.execute(
                select(VirtualInterface.instance_uuid, VirtualInterface.uuid).where(
                    VirtualInterface.deleted == 0
                )
            ):
                ports[uuid].append(port)
            servers = [self._live_server(cell, row, bdms, ports) for row in rows]
        self.hidden.extend((cell, uuid) for uuid in hidden)
        for m in open_moves:
            self.migrations[m.uuid] = OpenMigration(
                m.uuid,
                m.instance_uuid,
                m.status,
                m.source_compute,
                m.dest_compute,
                m.new_flavor_id,
            )
        for server in servers:
            if server.uuid in self.servers:
                other = self.servers[server.uuid].cell.name
                self.report.add(
                    "duplicate_copy",
                    server.uuid,
                    f"visible in both {other} and {cell.name}",
                    instance=server.uuid,
                    cell=cell.name,
                )
                continue
            self.servers[server.uuid] = server

    @staticmethod
    def _live_server(
        cell: Cell, row: Instance, bdms: dict[str, list[Any]], ports: dict[str, list[str]]
    ) -> LiveServer:
        mine = bdms.get(row.uuid, [])
        return LiveServer(
            uuid=row.uuid,
            cell=cell,
            host=row.host,
            vm_state=row.vm_state,
            task_state=row.task_state,
            flavor=row.flavor["cur"],
            volume_backed=any(b.boot_index == 0 and b.destination_type == "volume" for b in mine),
            ports=ports.get(row.uuid, []),
            flavors=dict(row.flavor),
            attachment_ids={b.attachment_id for b in mine if b.attachment_id},
        )

    def _flavor(self, flavor_id: str | None) -> dict[str, Any] | None:
        """A flavor by its internal id (as a migration records it), or None if it is gone."""
        if not flavor_id or not flavor_id.isdigit():
            return None
        if flavor_id not in self._flavors:
            with session_scope(self.rt.settings.api_db) as s:
                row = s.get(Flavor, int(flavor_id))
                self._flavors[flavor_id] = (
                    None
                    if row is None
                    else {
                        "vcpus": row.vcpus,
                        "memory_mb": row.memory_mb,
                        "root_gb": row.root_gb,
                        "ephemeral_gb": row.ephemeral_gb,
                        "swap": row.swap,
                    }
                )
        return self._flavors[flavor_id]

    def migration_status(self, migration_uuid: str) -> tuple[str, str] | None:
        """(status, server) of any migration, finished ones too, from the cells that answer."""
        if migration_uuid in self.migrations:
            m = self.migrations[migration_uuid]
            return m.status, m.instance_uuid
        for cell in self.reachable_cells:
            with session_scope(cell.db_url) as s:
                row = s.execute(
                    select(Migration.status, Migration.instance_uuid).where(
                        Migration.uuid == migration_uuid
                    )
                ).first()
            if row is not None:
                return row[0], row[1]
        return None

    def building(self, uuid: str) -> bool:
        """A server the API accepted that no cell holds yet (its build has not placed it)."""
        mapping = self.mappings.get(uuid)
        return mapping is not None and mapping.cell_id is None and not mapping.queued_for_delete

    # -- invariants
    def _check_hidden_copies(self) -> None:
        """A hidden copy lives only as long as the move that made it."""
        moving = {m.instance_uuid for m in self.migrations.values()}
        for cell, uuid in self.hidden:
            if uuid in moving:
                continue
            mapping = self.mappings.get(uuid)
            if mapping is None:
                mapped = "the server has no instance mapping"
            elif mapping.queued_for_delete:
                mapped = "the server is deleted"
            elif mapping.cell_id == cell.id:
                mapped = "its mapping names this cell"
            elif mapping.cell_id is None:
                mapped = "its mapping names no cell"
            else:
                mapped = f"its mapping names {self.rt.cells.by_id(mapping.cell_id).name}"
            self.report.add(
                "orphan_hidden_copy",
                uuid,
                f"hidden copy in {cell.name} with no move in progress; {mapped}",
                cell=cell.name,
                instance=uuid,
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
            migration_uuid = props.get("atoll_move_migration", "")
            migration = self.migrations.get(migration_uuid)
            if migration is not None and migration.status in ("pre-migrating", "migrating"):
                continue
            found = self.migration_status(migration_uuid) if migration_uuid else None
            move = (
                f"its move {migration_uuid} is {found[0]}"
                if found
                else f"its move {migration_uuid or '(none recorded)'} is unknown"
            )
            self.report.add(
                "leaked_snapshot",
                image["id"],
                f"temporary snapshot of {props.get('instance_uuid')} outlived its move ({move})",
                image=image["id"],
                instance=props.get("instance_uuid"),
                migration=migration_uuid or None,
            )
        self.report.checked["temporary_snapshots"] = count

    def _check_copies(self) -> None:
        """Each mapped server has its one visible copy in the cell its mapping names."""
        reachable = {c.id for c in self.reachable_cells}
        for uuid, mapping in self.mappings.items():
            cell_id = mapping.cell_id
            if mapping.queued_for_delete or cell_id is None or cell_id not in reachable:
                continue
            server = self.servers.get(uuid)
            cell_name = self.rt.cells.by_id(cell_id).name
            if server is None:
                self.report.add(
                    "missing_copy",
                    uuid,
                    f"mapped to cell {cell_name} but no visible copy is there",
                    instance=uuid,
                    cell=cell_name,
                )
            elif server.cell.id != cell_id:
                self.report.add(
                    "wrong_cell",
                    uuid,
                    f"visible in {server.cell.name} but mapped to {cell_name}",
                    instance=uuid,
                    cell=server.cell.name,
                )
        for uuid, server in self.servers.items():
            mapping = self.mappings.get(uuid)
            if mapping is None or mapping.queued_for_delete:
                self.report.add(
                    "unmapped_copy",
                    uuid,
                    f"visible in {server.cell.name} with no live instance mapping",
                    instance=uuid,
                    cell=server.cell.name,
                )

    def _check_allocations(self) -> None:
        """Every allocation has a live consumer and matches its flavor on its host.

        A provider's usage is the sum of its allocations (placement derives it, it
        stores no separate counter), so checking each consumer checks the usage too.
        """
        consumers = {c: a for c, a in self.rt.placement.all_consumers().items() if a}
        providers = {p.uuid: p.name for p in self.rt.placement.list_providers()}
        self.report.checked["allocation_consumers"] = len(consumers)
        for consumer, allocs in consumers.items():
            hosts = {providers.get(p, p) for p in allocs}
            migration = self.migrations.get(consumer)
            if migration is not None:
                self._check_migration_allocation(migration, hosts, allocs)
            elif consumer in self.servers:
                self._check_server_allocation(self.servers[consumer], hosts, allocs)
            elif not self.building(consumer):
                self.report.add(
                    "orphan_allocation",
                    consumer,
                    f"{_amounts(allocs)} on {', '.join(sorted(hosts))} for "
                    f"{self._describe_consumer(consumer)}",
                    consumer=consumer,
                )
        for uuid, server in self.servers.items():
            if (
                server.host
                and server.vm_state in STATES_WITH_GUEST
                and uuid not in consumers
                and not self.open_moves(uuid)
            ):
                self.report.add(
                    "missing_allocation",
                    uuid,
                    f"{server.vm_state} on {server.host} with no allocation",
                    consumer=uuid,
                    instance=uuid,
                )

    def _describe_consumer(self, consumer: str) -> str:
        """Who an orphaned consumer was, so the operator sees why it may go."""
        mapping = self.mappings.get(consumer)
        if mapping is not None and mapping.queued_for_delete:
            return f"server {consumer}, which is deleted"
        found = self.migration_status(consumer)
        if found is not None:
            return f"migration {consumer} of server {found[1]}, which is {found[0]}"
        return f"consumer {consumer}, which is no live server or unfinished migration"

    def _check_migration_allocation(
        self, m: OpenMigration, hosts: set[str], allocs: Mapping[str, Mapping[str, int]]
    ) -> None:
        """A move's migration holds the server's old flavor on the source host."""
        if hosts != {m.source}:
            self.report.add(
                "misplaced_allocation",
                m.uuid,
                f"migration {m.status} holds {sorted(hosts)}, not its source {m.source}",
                consumer=m.uuid,
                migration=m.uuid,
                instance=m.instance_uuid,
            )
        server = self.servers.get(m.instance_uuid)
        if server is None:
            return
        want = expected_resources(server.old_flavor, server.volume_backed)
        got = total(allocs)
        if got != want:
            self.report.add(
                "wrong_allocation",
                m.uuid,
                f"migration {m.uuid} ({m.status}) holds {got} but the old flavor of server "
                f"{server.uuid} is {want}",
                consumer=m.uuid,
                migration=m.uuid,
                instance=m.instance_uuid,
            )

    def _check_server_allocation(
        self, server: LiveServer, hosts: set[str], allocs: Mapping[str, Mapping[str, int]]
    ) -> None:
        """A server holds its flavor on its host; in a move, one of the move's flavors on
        one of its hosts (the destination claim before the cut-over, the source after a
        revert has given it back)."""
        moves = self.open_moves(server.uuid)
        allowed = {server.host} | {h for m in moves for h in (m.source, m.dest)}
        if len(hosts) != 1 or not hosts <= allowed:
            where = f"the server is on {server.host}"
            if moves:
                where += f" (moving: {', '.join(sorted(str(h) for h in allowed - {None}))})"
            self.report.add(
                "misplaced_allocation",
                server.uuid,
                f"allocated on {sorted(hosts)} but {where}",
                consumer=server.uuid,
                instance=server.uuid,
            )
        wants = [expected_resources(server.flavor, server.volume_backed)]
        for m in moves:
            flavors = [server.old_flavor, server.flavors.get("new"), self._flavor(m.new_flavor_id)]
            wants += [expected_resources(f, server.volume_backed) for f in flavors if f]
        got = total(allocs)
        if got not in wants:
            self.report.add(
                "wrong_allocation",
                server.uuid,
                f"allocation {got} does not match the flavor's {wants[0]}",
                consumer=server.uuid,
                instance=server.uuid,
            )

    def _check_guests(self) -> None:
        ctx = RequestContext.admin()
        reachable = {c.id for c in self.reachable_cells}
        for host, cell in sorted(self.rt.cells.host_cells().items()):
            if cell.id not in reachable:
                continue
            try:
                guests = self.rt.compute(cell).list_guests(ctx, host)
            except Exception as exc:
                self.report.add(
                    "host_unreachable",
                    host,
                    f"cannot list guests: {exc}; its guests were not verified",
                    host=host,
                )
                continue
            self.guests[host] = {g["uuid"] for g in guests}
            self._check_host_guests(host)
        self.report.checked["guests"] = sum(len(g) for g in self.guests.values())

    def _check_host_guests(self, host: str) -> None:
        """Each guest on the host has its server here; each server here has its guest."""
        on_host = self.guests[host]
        for uuid in sorted(on_host):
            server = self.servers.get(uuid)
            if server is None or host not in self.hosts_of(server):
                whose = (
                    "of no live server"
                    if server is None
                    else f"of server {uuid}, which is on {server.host}"
                )
                self.report.add(
                    "orphan_guest",
                    f"{host}/{uuid}",
                    f"guest {whose}",
                    host=host,
                    instance=uuid,
                )
        for uuid, server in self.servers.items():
            if server.host == host and server.vm_state in STATES_WITH_GUEST and uuid not in on_host:
                self.report.add(
                    "missing_guest",
                    uuid,
                    f"{server.vm_state} on {host} but the hypervisor has no guest",
                    host=host,
                    instance=uuid,
                )

    def _check_attachments(self) -> None:
        attachments = self.rt.volumes.all_attachments()
        self.report.checked["volume_attachments"] = len(attachments)
        for att in attachments:
            server = self.servers.get(att["instance_uuid"])
            facts = {
                "attachment": att["id"],
                "instance": att["instance_uuid"],
                "host": att.get("host"),
                "volume": att["volume_id"],
            }
            if server is None:
                self.report.add(
                    "orphan_attachment",
                    att["id"],
                    f"volume {att['volume_id']} attached to {att['instance_uuid']}, "
                    "which is no live server",
                    **facts,
                )
            elif att.get("host") not in self.hosts_of(server) | {None}:
                self.report.add(
                    "misplaced_attachment",
                    att["id"],
                    f"volume {att['volume_id']} attached on {att.get('host')} but "
                    f"the server is on {server.host}",
                    **facts,
                )

    def _check_bindings(self) -> None:
        bindings = self.rt.networks.all_bindings()
        owner = {p: s for s in self.servers.values() for p in s.ports}
        self.report.checked["port_bindings"] = len(bindings)
        for binding in bindings:
            server = owner.get(binding["port_id"])
            facts = {
                "port": binding["port_id"],
                "host": binding["host"],
                "instance": server.uuid if server else None,
            }
            if server is None:
                self.report.add(
                    "orphan_binding",
                    binding["port_id"],
                    f"binding on {binding['host']} for a port of no live server",
                    **facts,
                )
            elif binding["host"] not in self.hosts_of(server):
                self.report.add(
                    "misplaced_binding",
                    binding["port_id"],
                    f"{binding['status']} binding on {binding['host']} but the "
                    f"server is on {server.host}",
                    **facts,
                )
            elif (
                binding["status"] != "ACTIVE"
                and server.vm_state != "error"
                and binding["host"] == server.host
                and not self.open_moves(server.uuid)
            ):
                self.report.add(
                    "inactive_binding",
                    binding["port_id"],
                    f"the binding on the server's host {server.host} is not active",
                    **facts,
                )

    def _check_workflows(self) -> None:
        """No workflow is stuck: each runs under a live conductor, is finished, or
        is queued while a conductor is alive to take it."""
        from atoll.conductor.service import stuck_workflows

        try:
            unfinished, stuck = stuck_workflows(self.rt)
        except Exception as exc:  # no engine here, or its database is down
            self.report.add("workflows_unreadable", "workflow-db", f"cannot list workflows: {exc}")
            return
        self.report.checked["unfinished_workflows"] = unfinished
        for workflow_id, why in stuck:
            self.report.add("stuck_workflow", workflow_id, why, workflow=workflow_id)


def _amounts(allocs: Mapping[str, Mapping[str, int]]) -> str:
    """``VCPU 1, MEMORY_MB 512`` for a detail line."""
    return ", ".join(f"{rc} {amount}" for rc, amount in sorted(total(allocs).items())) or "nothing"


def run_audit(rt: Runtime) -> Report:
    report = Auditor(rt).run()
    for problem in report.problems:
        LOG.warning("audit: %s %s: %s", problem.kind, problem.resource, problem.detail)
    return report
