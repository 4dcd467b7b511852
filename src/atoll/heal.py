"""`atoll heal`: repair what the audit found, where a repair is safe, and say the rest.

Heal runs the audit, plans one repair per problem, runs the repairs (unless it
is a dry run), audits again and reports what is left.  A plan is either a
``Repair`` (what it does, in words, and the call that does it) or a
``Refusal`` (why a human must look).  Refusing is the default:

- a kind with no repair in ``REPAIRS`` is left to a human with its ``hint``;
- nothing is repaired while a cell cannot be read (what it holds is unknown:
  an "orphan" may belong to a server in that cell);
- nothing that belongs to a move in flight is touched: a move whose migration
  is unfinished legitimately holds two copies, two allocations, and bindings
  and attachments on two hosts, and its workflow owns them;
- nothing of a busy server (one with a task state) is touched: a workflow owns it;
- a repair that could destroy the only copy of something (a hidden copy when
  the mapped cell has no visible one, a guest when its server has none on its
  own host, ...) is refused.

Repairs re-read what they change (placement consumer generations, the hidden
flag) so that a change made between the audit and the repair makes the repair
fail instead of undoing someone's work; a failed repair is reported under
``needs_human`` with its error.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import select

from atoll.audit import (
    KINDS,
    Auditor,
    LiveServer,
    Problem,
    Report,
    expected_resources,
    run_audit,
)
from atoll.cells import Cell
from atoll.conductor.cell_copy import hard_delete_server
from atoll.context import RequestContext
from atoll.db.cell_models import Instance
from atoll.db.session import session_scope
from atoll.placement.service import AllocationRequest
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repaired:
    kind: str
    resource: str
    action: str


@dataclass(frozen=True)
class NeedsHuman:
    kind: str
    resource: str
    detail: str
    why: str


@dataclass
class HealReport:
    """What heal did (or, in a dry run, would do) and what it left to a human.

    ``clean_after``: after a real run, whether the second audit is clean; in a dry
    run, whether it would be if every planned repair succeeded.
    """

    dry_run: bool
    repaired: list[Repaired] = field(default_factory=list)
    needs_human: list[NeedsHuman] = field(default_factory=list)
    clean_after: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {
            "heal": {
                "dry_run": self.dry_run,
                "repaired": [asdict(r) for r in self.repaired],
                "needs_human": [asdict(n) for n in self.needs_human],
                "clean_after": self.clean_after,
            }
        }


@dataclass(frozen=True)
class Repair:
    """One safe repair: ``action`` says it in words, ``run`` does it.

    ``key`` names what it changes, so two problems fixed by one change (a
    misplaced and a wrong allocation of one server) run it once.
    """

    action: str
    run: Callable[[], None]
    key: str


@dataclass(frozen=True)
class Refusal:
    why: str


Plan = Repair | Refusal


class Healer:
    """Plans repairs from one audit; holds what the audit read so plans can check it."""

    def __init__(self, rt: Runtime, auditor: Auditor, report: Report) -> None:
        self.rt = rt
        self.auditor = auditor
        self.unreadable = sorted(
            p.resource for p in report.problems if p.kind == "cell_unreachable"
        )

    def plan(self, problem: Problem) -> Plan:
        planner = REPAIRS.get(problem.kind)
        if planner is None:
            kind = KINDS.get(problem.kind)
            return Refusal(kind.hint if kind else f"heal has no repair for {problem.kind!r}")
        if self.unreadable:
            return Refusal(
                f"cell(s) {', '.join(self.unreadable)} could not be read, so what they hold is "
                "unknown: heal repairs nothing until the audit sees every cell"
            )
        refusal = self._owner_is_busy(problem.facts.get("instance"))
        if refusal is not None:
            return refusal
        try:
            return planner(self, problem)
        except Exception as exc:  # a vanished port, provider, ...: let a human look
            LOG.warning("heal: cannot plan %s %s: %s", problem.kind, problem.resource, exc)
            return Refusal(f"heal could not plan a repair: {exc.__class__.__name__}: {exc}")

    def _owner_is_busy(self, instance: str | None) -> Refusal | None:
        """A move in flight or a running workflow owns the server: hands off."""
        if not instance:
            return None
        moves = self.auditor.open_moves(instance)
        if moves:
            m = moves[0]
            return Refusal(
                f"server {instance} is in a move in flight (migration {m.uuid}, {m.status}): "
                "heal never touches a move; confirm or revert it (or let it finish), then heal "
                "again"
            )
        server = self.auditor.servers.get(instance)
        if server is not None and server.task_state:
            return Refusal(
                f"server {instance} is busy ({server.task_state}): a workflow owns it; heal "
                "again once it has settled"
            )
        return None

    def may_still_live(self, uuid: str) -> str | None:
        """Why a server the audit did not see may exist after all (None if it is gone)."""
        mapping = self.auditor.mappings.get(uuid)
        if mapping is not None and mapping.queued_for_delete:
            return None  # deleted: whatever is left of it (hidden copies too) may go
        if mapping is not None:
            where = (
                "no cell yet (it is being built)"
                if mapping.cell_id is None
                else self.rt.cells.by_id(mapping.cell_id).name
            )
            return (
                f"server {uuid} is not deleted (its instance mapping names {where}) although no "
                "visible copy of it was found: fix its copies first (see the other problems)"
            )
        if any(hidden == uuid for _cell, hidden in self.auditor.hidden):
            return (
                f"a hidden copy of server {uuid} still exists: resolve that copy first, as this "
                "may be all that is left of the server"
            )
        return None

    def server_has_own_guest(self, server: LiveServer) -> bool:
        """The server's host answered and has the server's guest."""
        return bool(server.host) and server.uuid in self.auditor.guests.get(server.host or "", ())


# -- planners: one per repairable kind ------------------------------------------------------


def _plan_orphan_allocation(h: Healer, p: Problem) -> Plan:
    consumer = p.facts["consumer"]
    if reason := h.may_still_live(consumer):
        return Refusal(reason)
    seen = h.rt.placement.get_allocations(consumer)
    if not seen.allocations:
        return Repair(
            "nothing: the allocations are already gone", lambda: None, f"alloc:{consumer}"
        )
    request = AllocationRequest(
        {}, seen.project_id or "", seen.user_id or "", seen.consumer_generation
    )

    def run() -> None:
        h.rt.placement.replace_allocations({consumer: request})

    return Repair(f"delete the allocations of consumer {consumer}", run, f"alloc:{consumer}")


def _plan_server_allocation(h: Healer, p: Problem) -> Plan:
    """Rewrite a live server's allocation to its flavor on its host (heal_allocations)."""
    consumer = p.facts["consumer"]
    server = h.auditor.servers.get(consumer)
    if server is None or p.facts.get("migration"):
        return Refusal(f"consumer {consumer} is not a settled server: {KINDS[p.kind].hint}")
    if not server.host:
        return Refusal(f"server {consumer} has no host to allocate on: {KINDS[p.kind].hint}")
    found = h.rt.placement.list_providers(name=server.host)
    if len(found) != 1:
        return Refusal(f"placement has no resource provider named {server.host}")
    want = expected_resources(server.flavor, server.volume_backed)
    seen = h.rt.placement.get_allocations(consumer)
    project, user = (seen.project_id, seen.user_id) if seen.project_id else _owner_of(server)
    request = AllocationRequest(
        {found[0].uuid: want}, project, user or "", seen.consumer_generation
    )

    def run() -> None:
        h.rt.placement.replace_allocations({consumer: request})

    flavor = server.flavor.get("name") or server.flavor.get("flavorid") or "its flavor"
    amounts = ", ".join(f"{rc} {n}" for rc, n in sorted(want.items()))
    return Repair(
        f"rewrite the allocation of server {consumer} to {amounts} on {server.host} ({flavor})",
        run,
        f"alloc:{consumer}",
    )


def _owner_of(server: LiveServer) -> tuple[str, str]:
    """(project, user) of a server, for a consumer placement does not know yet."""
    with session_scope(server.cell.db_url) as s:
        row = s.execute(
            select(Instance.project_id, Instance.user_id).where(
                Instance.uuid == server.uuid, Instance.deleted == 0
            )
        ).first()
    return (row[0], row[1]) if row is not None else ("", "")


def _plan_hidden_copy(h: Healer, p: Problem) -> Plan:
    """Hard-delete a hidden copy only when the mapped cell holds the server (or it is deleted)."""
    uuid = p.facts["instance"]
    cell = h.rt.cells.by_name(p.facts["cell"])
    mapping = h.auditor.mappings.get(uuid)
    if mapping is None:
        return Refusal(
            f"server {uuid} has no instance mapping, so nothing says which copy is the server: "
            "this hidden copy may be all that is left of it"
        )
    if mapping.cell_id == cell.id:
        return Refusal(
            f"the instance mapping names {cell.name}, the cell of this hidden copy: it may be "
            "the server's only copy; un-hide it (or point the mapping at the visible copy)"
        )
    server = h.auditor.servers.get(uuid)
    if not mapping.queued_for_delete and (server is None or server.cell.id != mapping.cell_id):
        return Refusal(
            f"the cell the mapping names holds no visible copy of server {uuid}: this hidden "
            "copy may be all that is left of it"
        )

    def run() -> None:
        _require_still_hidden(cell, uuid)
        hard_delete_server(cell.db_url, uuid)

    return Repair(
        f"hard-delete the hidden copy of server {uuid} in {cell.name} (with its records there)",
        run,
        f"copy:{cell.name}:{uuid}",
    )


def _require_still_hidden(cell: Cell, uuid: str) -> None:
    """Re-read before deleting: a copy un-hidden since the audit must not go."""
    with session_scope(cell.db_url) as s:
        visible = s.scalar(
            select(Instance.id).where(
                Instance.uuid == uuid, Instance.deleted == 0, Instance.hidden.is_(False)
            )
        )
    if visible is not None:
        raise RuntimeError(f"the copy of {uuid} in {cell.name} is visible again since the audit")


def _plan_snapshot(h: Healer, p: Problem) -> Plan:
    image = p.facts["image"]
    migration = p.facts.get("migration")
    if migration and migration in h.auditor.migrations:
        status = h.auditor.migrations[migration].status
        return Refusal(
            f"its move {migration} is still {status}: confirm or revert it, then heal again"
        )

    def run() -> None:
        h.rt.images.delete(image)

    return Repair(f"delete temporary snapshot image {image}", run, f"image:{image}")


def _plan_orphan_guest(h: Healer, p: Problem) -> Plan:
    host, uuid = p.facts["host"], p.facts["instance"]
    server = h.auditor.servers.get(uuid)
    if server is None:
        if reason := h.may_still_live(uuid):
            return Refusal(reason)
    elif not h.server_has_own_guest(server):
        return Refusal(
            f"server {uuid} has no guest on its own host {server.host}: this one on {host} may "
            f"be its only guest (disks included); find out which one holds the server's data: "
            f"bring those disks to {server.host} or re-create the guest there (a hard reboot "
            "starts it afresh from its image), then heal again"
        )

    def run() -> None:
        h.rt.compute(h.rt.cells.for_host(host)).destroy(RequestContext.admin(), host, uuid)

    return Repair(
        f"destroy the guest {uuid} on {host} (and its disks)", run, f"guest:{host}:{uuid}"
    )


def _plan_attachment(h: Healer, p: Problem) -> Plan:
    attachment, uuid = p.facts["attachment"], p.facts["instance"]
    server = h.auditor.servers.get(uuid)
    if server is None:
        if reason := h.may_still_live(uuid):
            return Refusal(reason)
    elif attachment in server.attachment_ids:
        return Refusal(
            f"server {uuid}'s block device mapping uses this attachment: hard reboot the "
            f"server to attach its volume on {server.host}, then heal again"
        )

    def run() -> None:
        h.rt.volumes.attachment_delete(attachment)

    return Repair(
        f"delete attachment {attachment} of volume {p.facts.get('volume')} on "
        f"{p.facts.get('host')}",
        run,
        f"attachment:{attachment}",
    )


def _plan_binding(h: Healer, p: Problem) -> Plan:
    port, host = p.facts["port"], p.facts["host"]
    server = h.auditor.servers.get(p.facts.get("instance", ""))
    if server is None:
        device = h.rt.networks.get_port(port).get("device_id") or ""
        if device and (reason := h.may_still_live(device)):
            return Refusal(reason)
    elif not any(b["host"] == server.host for b in h.rt.networks.bindings(port)):
        return Refusal(
            f"port {port} has no binding on the server's host {server.host}: deleting this one "
            "would leave it unbound; hard reboot the server (it binds its ports on its host), "
            "then heal again"
        )

    def run() -> None:
        h.rt.networks.delete_binding(port, host)

    return Repair(f"delete the binding of port {port} on {host}", run, f"binding:{port}:{host}")


def _plan_activate_binding(h: Healer, p: Problem) -> Plan:
    port, host = p.facts["port"], p.facts["host"]

    def run() -> None:
        h.rt.networks.activate_binding(port, host)

    return Repair(
        f"activate the binding of port {port} on {host}, the server's host",
        run,
        f"binding:{port}:{host}",
    )


Planner = Callable[[Healer, Problem], Plan]

# kind -> planner, in the order the repairs run: what frees resources (deletions)
# before what claims them (allocation rewrites).
REPAIRS: dict[str, Planner] = {
    "orphan_allocation": _plan_orphan_allocation,
    "leaked_snapshot": _plan_snapshot,
    "orphan_guest": _plan_orphan_guest,
    "orphan_attachment": _plan_attachment,
    "misplaced_attachment": _plan_attachment,
    "orphan_binding": _plan_binding,
    "inactive_binding": _plan_activate_binding,
    "misplaced_binding": _plan_binding,
    "orphan_hidden_copy": _plan_hidden_copy,
    "misplaced_allocation": _plan_server_allocation,
    "wrong_allocation": _plan_server_allocation,
    "missing_allocation": _plan_server_allocation,
}
_ORDER = {kind: n for n, kind in enumerate(REPAIRS)}

assert set(REPAIRS) == {k for k, v in KINDS.items() if v.repairable}, (
    "audit.KINDS and heal.REPAIRS disagree on what is repairable"
)


# -- running --------------------------------------------------------------------------------


def heal(rt: Runtime, *, dry_run: bool) -> HealReport:
    """Audit, repair what is safe (or only say so in a dry run), audit again."""
    auditor = Auditor(rt)
    before = auditor.run()
    healer = Healer(rt, auditor, before)
    plans = sorted(
        ((p, healer.plan(p)) for p in before.problems),
        key=lambda item: _ORDER.get(item[0].kind, len(_ORDER)),
    )
    result = HealReport(dry_run=dry_run)
    outcomes: dict[str, str | None] = {}
    for problem, plan in plans:
        if isinstance(plan, Refusal):
            result.needs_human.append(_needs(problem, plan.why))
            continue
        if not dry_run:
            if plan.key not in outcomes:
                outcomes[plan.key] = _attempt(problem, plan)
            if error := outcomes[plan.key]:
                result.needs_human.append(_needs(problem, f"{plan.action} failed: {error}"))
                continue
        result.repaired.append(Repaired(problem.kind, problem.resource, plan.action))
    if dry_run:
        result.clean_after = not result.needs_human
        return result
    after = run_audit(rt)
    result.needs_human = _left_over(after, result)
    result.clean_after = after.clean
    return result


def _attempt(problem: Problem, plan: Repair) -> str | None:
    """Run one repair; its error in words, or None when it worked."""
    try:
        plan.run()
    except Exception as exc:
        LOG.warning("heal: %s %s: %s failed: %s", problem.kind, problem.resource, plan.action, exc)
        return f"{exc.__class__.__name__}: {exc}"
    LOG.warning("heal: %s %s: %s", problem.kind, problem.resource, plan.action)
    return None


def _needs(problem: Problem, why: str) -> NeedsHuman:
    return NeedsHuman(problem.kind, problem.resource, problem.detail, why)


def _left_over(after: Report, result: HealReport) -> list[NeedsHuman]:
    """What the second audit still finds, each with the reason heal left it."""
    why = {(n.kind, n.resource): n.why for n in result.needs_human}
    repaired = {(r.kind, r.resource): r.action for r in result.repaired}
    left = []
    for problem in after.problems:
        key = (problem.kind, problem.resource)
        if key in why:
            reason = why[key]
        elif key in repaired:
            reason = f"still found after heal did: {repaired[key]}"
        else:
            kind = KINDS.get(problem.kind)
            hint = kind.hint if kind else "look into it"
            reason = f"appeared while heal ran (something changed meanwhile); heal again or {hint}"
        left.append(_needs(problem, reason))
    return left
