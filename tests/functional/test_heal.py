"""`atoll audit` and `atoll heal`, through the HTTP API and the `atoll` command.

Each breach of an invariant (DESIGN.md "Invariants") is made for real with the
in-process service objects (placement, cells, image/volume/network services,
the compute RPC); the audit and heal under test are reached only through
``/v2.1/atoll-admin/{audit,heal}`` or the `atoll` command run as a process.

Setup unless a test says otherwise: ``cell1`` with ``host1``, ``cell2`` with
``host2``; one user server ``S`` (m1.tiny, image-backed, one port) on ``host1``.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

pytest.register_assert_rewrite("tests.functional.move_checks")  # show values in its asserts

import uvicorn  # noqa: E402

from atoll.conductor.cell_copy import copy_server  # noqa: E402
from atoll.context import RequestContext  # noqa: E402
from atoll.db.api_models import CellMapping  # noqa: E402
from atoll.db.session import session_scope  # noqa: E402
from atoll.placement.service import AllocationRequest  # noqa: E402
from atoll.runtime import Runtime  # noqa: E402
from tests.functional.move_checks import (  # noqa: E402
    FLAVORS,
    cell_copies,
    consumer_allocations,
    guests,
    images_for,
    migrations,
    port_bindings,
    provider_uuid,
    volume_attachments,
    wait_status,
)
from tests.harness import ADMIN_TOKEN, Atoll  # noqa: E402
from tests.serve_process import ATOLL, free_port  # noqa: E402

TWO_CELLS = {"cell1": ["host1"], "cell2": ["host2"]}
TINY = FLAVORS["1"].allocation(False)


@dataclass
class World:
    atoll: Atoll
    server: str  # S, ACTIVE on host1
    port: str  # S's port

    @property
    def rt(self) -> Runtime:
        runtime = self.atoll.runtime
        assert runtime is not None
        return runtime


@pytest.fixture
def world(make_atoll) -> World:  # type: ignore[no-untyped-def]
    atoll = make_atoll(cells=TWO_CELLS, scheduler={"host_weights": {"host1": 100.0}})
    server = atoll.create_server()["id"]
    (port,) = [p["id"] for p in atoll.runtime.networks.list_ports(device_id=server)]
    world = World(atoll, server, port)
    assert_audit(world, set())
    return world


# --- the API under test ---------------------------------------------------------------------


def audit(world: World) -> set[tuple[str, str]]:
    """(kind, resource) of every problem ``GET /atoll-admin/audit`` reports."""
    report = world.atoll.admin.ok("GET", "/atoll-admin/audit")
    assert report["clean"] == (not report["problems"])
    return {(p["kind"], p["resource"]) for p in report["problems"]}


def assert_audit(world: World, expected: set[tuple[str, str]]) -> None:
    found = audit(world)
    assert found == expected, f"audit found {sorted(found)}, expected {sorted(expected)}"


def heal(world: World, *, dry_run: bool) -> dict[str, Any]:
    return world.atoll.admin.ok("POST", "/atoll-admin/heal", json={"dry_run": dry_run})["heal"]


def entries(items: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(i["kind"], i["resource"]) for i in items}


# --- breaches, each made for real -----------------------------------------------------------


def orphan_allocation(w: World) -> set[tuple[str, str]]:
    """An allocation on host2 for a consumer that is no server and no migration."""
    stray = str(uuid.uuid4())
    w.rt.placement.claim(stray, provider_uuid(w.atoll, "host2"), {"VCPU": 1}, "demo", "alice")
    return {("orphan_allocation", stray)}


def rewrite_allocation(w: World, host: str, resources: dict[str, int]) -> None:
    seen = w.rt.placement.get_allocations(w.server)
    request = AllocationRequest(
        {provider_uuid(w.atoll, host): resources},
        seen.project_id or "demo",
        seen.user_id or "alice",
        seen.consumer_generation,
    )
    w.rt.placement.replace_allocations({w.server: request})


def wrong_allocation(w: World) -> set[tuple[str, str]]:
    """S holds less memory than its flavor says."""
    rewrite_allocation(w, "host1", {**TINY, "MEMORY_MB": 1})
    return {("wrong_allocation", w.server)}


def misplaced_allocation(w: World) -> set[tuple[str, str]]:
    """S's allocation sits on host2 while S runs on host1."""
    rewrite_allocation(w, "host2", TINY)
    return {("misplaced_allocation", w.server)}


def missing_allocation(w: World) -> set[tuple[str, str]]:
    w.rt.placement.delete_allocations(w.server)
    return {("missing_allocation", w.server)}


def orphan_hidden_copy(w: World) -> set[tuple[str, str]]:
    """A hidden copy of S in cell2 (mapped to cell1) that no move owns."""
    cell1, cell2 = (w.rt.cells.by_name(c).db_url for c in ("cell1", "cell2"))
    copy_server(cell1, cell2, w.server, str(uuid.uuid4()))
    return {("orphan_hidden_copy", w.server)}


def leaked_snapshot(w: World) -> set[tuple[str, str]]:
    """A temporary snapshot of S for a move that does not exist any more."""
    image, path = w.rt.images.reserve_snapshot(
        "S-move",
        instance_uuid=w.server,
        owner="demo",
        properties={"atoll_temporary": "true", "atoll_move_migration": str(uuid.uuid4())},
    )
    path.write_bytes(b"root disk")
    w.rt.images.finalize_snapshot(image["id"])
    return {("leaked_snapshot", image["id"])}


def orphan_guest(w: World) -> set[tuple[str, str]]:
    """A guest on host2 that belongs to no server."""
    ghost = str(uuid.uuid4())
    spawn(w, "host2", ghost)
    return {("orphan_guest", f"host2/{ghost}")}


def spawn(w: World, host: str, instance_uuid: str) -> None:
    compute = w.rt.compute(w.rt.cells.for_host(host))
    flavor = {"vcpus": 1, "memory_mb": 512, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}
    compute.call(
        RequestContext.admin(),
        host,
        "spawn",
        instance_uuid=instance_uuid,
        flavor=flavor,
        image_id=w.atoll.image_id,
        block_devices=[],
    )


def orphan_attachment(w: World) -> set[tuple[str, str]]:
    """A volume attached on host1 to a server that never existed."""
    volume = w.rt.volumes.create(1, project_id="demo")["id"]
    att = w.rt.volumes.attachment_create(
        volume, str(uuid.uuid4()), host="host1", connector={"host": "host1"}
    )
    return {("orphan_attachment", att["id"])}


def misplaced_attachment(w: World) -> set[tuple[str, str]]:
    """A volume attached to S on host2, where S is not."""
    volume = w.rt.volumes.create(1, project_id="demo")["id"]
    att = w.rt.volumes.attachment_create(
        volume, w.server, host="host2", connector={"host": "host2"}
    )
    return {("misplaced_attachment", att["id"])}


def orphan_binding(w: World) -> set[tuple[str, str]]:
    """An active binding on host1 of a port no server uses."""
    port = w.rt.networks.create_port(w.atoll.network_id, project_id="demo")["id"]
    w.rt.networks.create_binding(port, "host1", active=True)
    return {("orphan_binding", port)}


def misplaced_binding(w: World) -> set[tuple[str, str]]:
    """S's port also bound (inactive) on host2."""
    w.rt.networks.create_binding(w.port, "host2")
    return {("misplaced_binding", w.port)}


def active_binding_elsewhere(w: World) -> set[tuple[str, str]]:
    """S's port bound and active on host2: host1's binding went inactive."""
    w.rt.networks.create_binding(w.port, "host2", active=True)
    return {("misplaced_binding", w.port), ("inactive_binding", w.port)}


BREACHES: dict[str, Callable[[World], set[tuple[str, str]]]] = {
    f.__name__: f
    for f in (
        orphan_allocation,
        wrong_allocation,
        misplaced_allocation,
        missing_allocation,
        orphan_hidden_copy,
        leaked_snapshot,
        orphan_guest,
        orphan_attachment,
        misplaced_attachment,
        orphan_binding,
        misplaced_binding,
        active_binding_elsewhere,
    )
}


def check_s_intact(w: World) -> None:
    """After heal: S is as it was booted, and holds exactly what it should."""
    server = w.atoll.admin.ok("GET", f"/servers/{w.server}")["server"]
    assert (server["status"], server["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", "host1")
    assert consumer_allocations(w.atoll, w.server) == {"host1": TINY}
    assert w.server in guests(w.atoll, "host1") and guests(w.atoll, "host2") == {}
    assert [(b["host"], b["status"]) for b in port_bindings(w.atoll, w.port)] == [
        ("host1", "ACTIVE")
    ]
    assert volume_attachments(w.atoll, w.server) == []
    assert [c["hidden"] for c in cell_copies(w.atoll, "cell1", w.server)] == [False]
    assert cell_copies(w.atoll, "cell2", w.server) == []
    assert [i["status"] for i in images_for(w.atoll, w.server)] in ([], ["deleted"])


@pytest.mark.parametrize("breach", list(BREACHES))
def test_audit_reports_each_breach_dry_run_changes_nothing_heal_repairs_it(
    world: World, breach: str
) -> None:
    expected = BREACHES[breach](world)
    assert_audit(world, expected)

    planned = heal(world, dry_run=True)
    assert planned["dry_run"] is True
    assert entries(planned["repaired"]) == expected
    assert all(r["action"] for r in planned["repaired"])
    assert planned["needs_human"] == [] and planned["clean_after"] is True
    assert_audit(world, expected)  # a dry run changes nothing

    done = heal(world, dry_run=False)
    assert done["dry_run"] is False
    assert entries(done["repaired"]) == expected
    assert [r["action"] for r in done["repaired"]] == [r["action"] for r in planned["repaired"]]
    assert done["needs_human"] == [] and done["clean_after"] is True
    assert_audit(world, set())
    check_s_intact(world)

    again = heal(world, dry_run=False)
    assert again == {"dry_run": False, "repaired": [], "needs_human": [], "clean_after": True}


def test_audit_problems_say_whether_heal_can_repair_them(world: World) -> None:
    orphan_guest(world)
    stop_guest_of_s(world)
    report = world.atoll.admin.ok("GET", "/atoll-admin/audit")
    repairable = {p["kind"]: p["repairable"] for p in report["problems"]}
    assert repairable == {"orphan_guest": True, "missing_guest": False}
    assert all(p["detail"] for p in report["problems"])


def stop_guest_of_s(w: World) -> None:
    """S's guest disappears from host1 (the hypervisor lost it)."""
    w.rt.compute(w.rt.cells.for_host("host1")).destroy(RequestContext.admin(), "host1", w.server)


def test_heal_leaves_what_it_cannot_repair_to_a_human(world: World) -> None:
    # S lost its guest on host1, and a guest of S runs on host2: destroying that one
    # could destroy the server's only disks, so heal must not
    stop_guest_of_s(world)
    spawn(world, "host2", world.server)
    stray = orphan_allocation(world)
    assert_audit(
        world,
        {("missing_guest", world.server), ("orphan_guest", f"host2/{world.server}")} | stray,
    )

    done = heal(world, dry_run=False)
    assert entries(done["repaired"]) == stray
    why = {n["kind"]: n["why"] for n in done["needs_human"]}
    assert set(why) == {"missing_guest", "orphan_guest"}
    assert "hard reboot" in why["missing_guest"]
    assert "only guest" in why["orphan_guest"]
    assert all(n["detail"] for n in done["needs_human"])
    assert done["clean_after"] is False
    assert world.server in guests(world.atoll, "host2")  # untouched
    assert_audit(
        world, {("missing_guest", world.server), ("orphan_guest", f"host2/{world.server}")}
    )

    # what the human does: hard reboot S on host1; then the host2 guest is a leftover
    world.atoll.admin.ok(
        "POST", f"/servers/{world.server}/action", 202, json={"reboot": {"type": "HARD"}}
    )
    wait_status(world.atoll, world.atoll.admin, world.server, "ACTIVE")
    assert_audit(world, {("orphan_guest", f"host2/{world.server}")})
    done = heal(world, dry_run=False)
    assert entries(done["repaired"]) == {("orphan_guest", f"host2/{world.server}")}
    assert done["clean_after"] is True
    assert_audit(world, set())
    check_s_intact(world)


def test_heal_does_not_touch_a_move_in_flight(world: World) -> None:
    # S resized across cells to host2, waiting in VERIFY_RESIZE: two copies, two allocations
    world.atoll.admin.ok(
        "POST", f"/servers/{world.server}/action", 202, json={"resize": {"flavorRef": "2"}}
    )
    wait_status(world.atoll, world.atoll.admin, world.server, "VERIFY_RESIZE")
    (migration,) = [m["uuid"] for m in migrations(world.atoll, world.server)]
    small = FLAVORS["2"].allocation(False)

    def held() -> dict[str, Any]:
        return {
            "server": consumer_allocations(world.atoll, world.server),
            "migration": consumer_allocations(world.atoll, migration),
            "cell1": [c["hidden"] for c in cell_copies(world.atoll, "cell1", world.server)],
            "cell2": [c["hidden"] for c in cell_copies(world.atoll, "cell2", world.server)],
            "host2": list(guests(world.atoll, "host2")),
            "bindings": sorted(b["host"] for b in port_bindings(world.atoll, world.port)),
        }

    before = held()
    assert before == {
        "server": {"host2": small},
        "migration": {"host1": TINY},
        "cell1": [True],
        "cell2": [False],
        "host2": [world.server],
        "bindings": ["host1", "host2"],
    }
    assert_audit(world, set())
    done = heal(world, dry_run=False)
    assert done == {"dry_run": False, "repaired": [], "needs_human": [], "clean_after": True}
    assert held() == before

    # even a real breach inside the move is left to the move (and a human)
    seen = world.rt.placement.get_allocations(migration)
    world.rt.placement.replace_allocations(
        {
            migration: AllocationRequest(
                {provider_uuid(world.atoll, "host1"): {**TINY, "VCPU": 2}},
                seen.project_id or "",
                seen.user_id or "",
                seen.consumer_generation,
            )
        }
    )
    assert_audit(world, {("wrong_allocation", migration)})
    done = heal(world, dry_run=False)
    assert done["repaired"] == [] and done["clean_after"] is False
    (needs,) = done["needs_human"]
    assert needs["kind"] == "wrong_allocation" and "move in flight" in needs["why"]
    assert consumer_allocations(world.atoll, migration) == {"host1": {**TINY, "VCPU": 2}}

    # confirming the resize drops the migration's allocation: clean again
    world.atoll.admin.ok(
        "POST", f"/servers/{world.server}/action", 204, json={"confirmResize": None}
    )
    wait_status(world.atoll, world.atoll.admin, world.server, "ACTIVE")
    assert_audit(world, set())


@contextmanager
def cell_unreadable(w: World, cell: str) -> Iterator[None]:
    """The cell's mapping names a database that cannot be opened, for the block's length."""
    with session_scope(w.rt.settings.api_db) as s:
        row = s.scalar(select(CellMapping).where(CellMapping.name == cell))
        real, row.database_connection = row.database_connection, "sqlite:////nonexistent/x.db"
    try:
        yield
    finally:
        with session_scope(w.rt.settings.api_db) as s:
            s.scalar(select(CellMapping).where(CellMapping.name == cell)).database_connection = real
        w.rt.cells.refresh()


def test_heal_repairs_nothing_while_a_cell_cannot_be_read(world: World) -> None:
    stray = orphan_allocation(world)
    with cell_unreadable(world, "cell2"):
        assert audit(world) == {("cell_unreachable", "cell2")} | stray
        done = heal(world, dry_run=False)
        assert done["repaired"] == [] and done["clean_after"] is False
        why = {(n["kind"], n["resource"]): n["why"] for n in done["needs_human"]}
        assert set(why) == {("cell_unreachable", "cell2")} | stray
        assert "could not be read" in why[next(iter(stray))]
        assert consumer_allocations(world.atoll, next(iter(stray))[1]) != {}
    done = heal(world, dry_run=False)
    assert entries(done["repaired"]) == stray and done["clean_after"] is True


def test_heal_endpoint_is_admin_only_and_checks_its_body(world: World) -> None:
    orphan_allocation(world)
    assert world.atoll.user.post("/atoll-admin/heal", json={"dry_run": False}).status_code == 403
    for body in ({}, {"dry_run": "yes"}, {"dry_run": 0}, {"dry_run": True, "force": True}):
        resp = world.atoll.admin.post("/atoll-admin/heal", json=body)
        assert resp.status_code == 400, (body, resp.text)
    assert len(audit(world)) == 1  # nothing was repaired on the way


# --- the `atoll` command --------------------------------------------------------------------


@contextmanager
def serving(atoll: Atoll) -> Iterator[str]:
    """The deployment's API on a real port, for the `atoll` command run as a process."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(atoll.embedded.app(), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def atoll_cmd(base: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATOLL_TOKEN": ADMIN_TOKEN, "COLUMNS": "250"}
    return subprocess.run(
        [*ATOLL, *args, "--url", base], capture_output=True, text=True, env=env, timeout=120
    )


def test_cli_heal_dry_run_then_heal(world: World) -> None:
    (_, stray), *_ = orphan_allocation(world)
    (_, ghost), *_ = orphan_guest(world)
    with serving(world.atoll) as base:
        found = atoll_cmd(base, "audit")
        assert found.returncode == 1, found.stdout + found.stderr
        assert "orphan_allocation" in found.stdout and "orphan_guest" in found.stdout

        planned = atoll_cmd(base, "heal", "--dry-run")
        assert planned.returncode == 0, planned.stdout + planned.stderr
        assert "would repair" in planned.stdout and "would be clean" in planned.stdout
        assert stray in planned.stdout and ghost in planned.stdout
        assert atoll_cmd(base, "audit").returncode == 1  # nothing changed

        done = atoll_cmd(base, "heal")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "repaired" in done.stdout and "clean after healing" in done.stdout
        assert "delete the allocations" in done.stdout and "destroy the guest" in done.stdout

        clean = atoll_cmd(base, "audit")
        assert clean.returncode == 0 and "clean" in clean.stdout
        nothing = atoll_cmd(base, "heal")
        assert nothing.returncode == 0 and "nothing to repair" in nothing.stdout


def test_cli_heal_exits_1_when_a_human_is_needed(world: World) -> None:
    stop_guest_of_s(world)
    orphan_allocation(world)
    with serving(world.atoll) as base:
        planned = atoll_cmd(base, "heal", "--dry-run")
        assert planned.returncode == 1, planned.stdout + planned.stderr
        assert "needs a human" in planned.stdout and "missing_guest" in planned.stdout

        done = atoll_cmd(base, "heal", "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        assert '"missing_guest"' in done.stdout and "hard reboot" in done.stdout
        assert atoll_cmd(base, "audit").returncode == 1
    assert_audit(world, {("missing_guest", world.server)})


def test_cli_heal_help_and_unreachable_api(tmp_path) -> None:  # type: ignore[no-untyped-def]
    env = {**os.environ, "ATOLL_DATA_DIR": str(tmp_path)}
    shown = subprocess.run([*ATOLL, "heal", "--help"], capture_output=True, text=True, env=env)
    assert shown.returncode == 0
    for words in ("--dry-run", "--url", "--token", "needs a human", "move in flight"):
        assert words in " ".join(shown.stdout.split()), words
    gone = atoll_cmd(f"http://127.0.0.1:{free_port()}", "heal")
    assert gone.returncode == 2 and "cannot reach" in gone.stderr
