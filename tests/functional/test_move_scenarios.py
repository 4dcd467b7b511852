"""Move scenarios S1-S13, E1 and E4 of SCENARIOS.md, black-box over HTTP.

Setup unless a test says otherwise: ``cell1`` with ``host1``, ``cell2`` with
``host2``, one aggregate per cell whose availability zone is the cell's name,
a host weight that lands new servers on ``host1``.  Servers are made by
``move_checks.boot`` (tagged pre-existing port, server tag ``test``, key pair,
metadata; volume-backed ones boot from a volume with BDM tag ``root``); moves
are done by the admin.  ``resize_and_validate`` is SCENARIOS.md's "Resize and
validate" list.  Every test ends with a clean audit.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

pytest.register_assert_rewrite("tests.functional.move_checks")  # show values in its asserts

from sqlalchemy import select  # noqa: E402

from atoll.db.cell_models import Migration  # noqa: E402
from atoll.db.session import session_scope  # noqa: E402
from tests.functional.move_checks import (  # noqa: E402
    FLAVORS,
    RUNNING,
    SHUTDOWN,
    Booted,
    action,
    admin_server,
    attach_volume,
    attached_volumes,
    boot,
    cell_copies,
    cell_of,
    check_confirmed,
    confirm_and_validate,
    conflict_message,
    consumer_allocations,
    delete_and_validate,
    detach_volume,
    guests,
    hypervisor_usage,
    images_for,
    instance_actions,
    migrations,
    notification_mark,
    port_bindings,
    provider_allocations,
    resize_and_validate,
    revert_and_validate,
    set_faults,
    start_move,
    volume_attachments,
    wait_migration,
    wait_notification,
    wait_status,
    wait_until,
)
from tests.harness import Atoll  # noqa: E402

TWO_CELLS = {"cell1": ["host1"], "cell2": ["host2"]}
THIRD_HOST_IN_CELL1 = {"cell1": ["host1", "host3"], "cell2": ["host2"]}
ZERO = (0, 0, 0)


def deploy(make_atoll, cells=None, weights=None, **settings: Any) -> Atoll:  # type: ignore[no-untyped-def]
    return make_atoll(
        cells=cells or TWO_CELLS,
        scheduler={"host_weights": weights or {"host1": 100.0}},  # new servers land on host1
        **settings,
    )


def archive(atoll: Atoll) -> str:
    """`atoll db archive --until-complete` as an operator runs it, against this deployment."""
    env = {
        **os.environ,
        "ATOLL_DATA_DIR": str(atoll.embedded.settings.data_dir),
        "COLUMNS": "200",
    }
    result = subprocess.run(
        [sys.executable, "-m", "atoll.cli.main", "db", "archive", "--until-complete"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def archived_instances(output: str) -> int:
    """Instance rows moved, summed over the cells of the archive's table."""
    return sum(int(n) for n in re.findall(r"\bcell\d+\s*\W\s*instances\s*\W\s*(\d+)", output))


def deleted_migration_status(atoll: Atoll, cell: str, migration_uuid: str) -> list[str]:
    """The migration's status in a cell's database, soft-deleted rows included."""
    url = atoll.runtime.cells.by_name(cell).db_url
    with session_scope(url) as s:
        return list(s.scalars(select(Migration.status).where(Migration.uuid == migration_uuid)))


def check_nothing_on(atoll: Atoll, host: str, server: Booted) -> None:
    """No guest, allocation, usage, attachment or port binding of the server on ``host``."""
    assert server.id not in guests(atoll, host)
    assert provider_allocations(atoll, host) == {}
    assert hypervisor_usage(atoll)[host] == ZERO
    assert [a for a in volume_attachments(atoll, server.id) if a["host"] == host] == []
    assert [b for b in port_bindings(atoll, server.port_id) if b["host"] == host] == []


# --- S1-S4: resize across cells, then confirm, revert or delete ------------------------------


def test_s1_image_backed_resize_across_cells_attach_volume_confirm(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "s1")
    moved = resize_and_validate(atoll, server, target_host="host2")

    volume = attach_volume(atoll, server)
    confirm_and_validate(atoll, moved)
    assert provider_allocations(atoll, "host1") == {}
    assert provider_allocations(atoll, "host2") == {server.id: FLAVORS["2"].allocation(False)}
    assert guests(atoll, "host1") == {} and guests(atoll, "host2") == {server.id: RUNNING}
    assert hypervisor_usage(atoll)["host1"] == ZERO
    assert attached_volumes(atoll, server)[volume] == "data"
    assert [a["host"] for a in volume_attachments(atoll, server.id)] == ["host2"]
    assert atoll.runtime.volumes.get(volume)["status"] == "in-use"
    atoll.assert_clean()

    delete_and_validate(atoll, server)
    assert cell_copies(atoll, "cell1", server.id) == []
    assert [c["deleted"] for c in cell_copies(atoll, "cell2", server.id)] == [True]
    out = archive(atoll)
    assert archived_instances(out) >= 1, out
    assert cell_copies(atoll, "cell2", server.id) == []
    atoll.assert_clean()


def test_s2_volume_backed_resize_across_cells_attach_volume_revert(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "s2", volume_backed=True)
    moved = resize_and_validate(atoll, server, target_host="host2")

    volume = attach_volume(atoll, server)
    revert_and_validate(atoll, moved)
    assert admin_server(atoll, server.id)["status"] == "ACTIVE"
    assert provider_allocations(atoll, "host2") == {}
    assert provider_allocations(atoll, "host1") == {server.id: FLAVORS["1"].allocation(True)}
    assert guests(atoll, "host1") == {server.id: RUNNING} and guests(atoll, "host2") == {}
    assert attached_volumes(atoll, server) == {server.root_volume: "root", volume: "data"}
    assert sorted((a["volume_id"], a["host"]) for a in volume_attachments(atoll, server.id)) == (
        sorted([(server.root_volume, "host1"), (volume, "host1")])
    )
    assert atoll.runtime.volumes.get(volume)["status"] == "in-use"
    atoll.assert_clean()

    delete_and_validate(atoll, server)
    atoll.assert_clean()


def test_s3_detach_volume_while_resized_then_revert(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "s3")
    volume = attach_volume(atoll, server)
    moved = resize_and_validate(atoll, server, target_host="host2")

    detach_volume(atoll, server, volume)
    assert attached_volumes(atoll, server) == {}
    revert_and_validate(atoll, moved)
    assert attached_volumes(atoll, server) == {}, "the detached volume came back on revert"
    assert [a for a in volume_attachments(atoll, server.id) if a["volume_id"] == volume] == []
    assert atoll.runtime.volumes.get(volume)["status"] == "available"
    atoll.assert_clean()

    delete_and_validate(atoll, server)
    atoll.assert_clean()


@pytest.mark.parametrize("volume_backed", [False, True], ids=["image", "volume"])
def test_s4_delete_while_verify_resize(make_atoll, volume_backed: bool) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "s4", volume_backed=volume_backed)
    moved = resize_and_validate(atoll, server, target_host="host2")

    server.api.ok("DELETE", f"/servers/{server.id}", 204)
    atoll.wait_gone(server.api, server.id)
    # the resize was confirmed first, in the cell the server was last in
    assert deleted_migration_status(atoll, "cell2", moved.migration_uuid) == ["confirmed"]
    # soft-deleted in its current cell, hard-deleted in the other
    assert [(c["deleted"], c["host"]) for c in cell_copies(atoll, "cell2", server.id)] == [
        (True, "host2")
    ]
    assert cell_copies(atoll, "cell1", server.id) == []
    # no leaked attachment, allocation or guest
    assert volume_attachments(atoll, server.id) == []
    assert consumer_allocations(atoll, server.id) == {}
    assert consumer_allocations(atoll, moved.migration_uuid) == {}
    for host in ("host1", "host2"):
        assert provider_allocations(atoll, host) == {}, host
        assert guests(atoll, host) == {}, host
        assert hypervisor_usage(atoll)[host] == ZERO, host
    if volume_backed:
        assert atoll.runtime.volumes.get(server.root_volume)["status"] == "available"
    assert port_bindings(atoll, server.port_id) == []
    atoll.assert_clean()


# --- S5-S8: where the scheduler sends a move -------------------------------------------------


def test_s5_cold_migrate_to_a_requested_host_in_the_other_cell(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll, cells=THIRD_HOST_IN_CELL1)
    server = boot(atoll, "s5")
    moved = resize_and_validate(atoll, server, flavor=None, host="host2", target_host="host2")
    assert moved.cross_cell and server.id not in guests(atoll, "host3")
    confirm_and_validate(atoll, moved)
    atoll.assert_clean()


def test_s6_cold_migrate_stays_in_the_source_cell(make_atoll) -> None:  # type: ignore[no-untyped-def]
    # the host weigher prefers host2 (cell2) to host3 (cell1); the cross-cell weigher wins
    atoll = deploy(make_atoll, cells=THIRD_HOST_IN_CELL1, weights={"host1": 100.0, "host2": 50.0})
    server = boot(atoll, "s6")
    moved = resize_and_validate(atoll, server, flavor=None, target_host="host3")
    assert not moved.cross_cell
    assert cell_copies(atoll, "cell2", server.id) == []
    assert images_for(atoll, server.id) == []
    confirm_and_validate(atoll, moved)
    atoll.assert_clean()


def aggregate_id(atoll: Atoll, name: str) -> int:
    found = [a for a in atoll.admin.ok("GET", "/os-aggregates")["aggregates"] if a["name"] == name]
    assert len(found) == 1, found
    return found[0]["id"]


def test_s7_request_spec_zone_sends_the_resize_to_the_other_cell(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll, cells=THIRD_HOST_IN_CELL1, weights={"host1": 100.0, "host3": 50.0})
    # zone "span" holds host1 (cell1) and host2 (cell2); host3 stays in zone cell1
    for host, aggregate in (("host1", "cell1-zone"), ("host2", "cell2-zone")):
        agg = aggregate_id(atoll, aggregate)
        atoll.admin.ok(
            "POST", f"/os-aggregates/{agg}/action", 200, json={"remove_host": {"host": host}}
        )
    body = {"aggregate": {"name": "span", "availability_zone": "span"}}
    span = atoll.admin.ok("POST", "/os-aggregates", 200, json=body)["aggregate"]["id"]
    for host in ("host1", "host2"):
        atoll.admin.ok(
            "POST", f"/os-aggregates/{span}/action", 200, json={"add_host": {"host": host}}
        )
    server = boot(atoll, "s7", zone="span")
    assert admin_server(atoll, server.id)["OS-EXT-SRV-ATTR:host"] == "host1"

    moved = resize_and_validate(atoll, server, target_host="host2", target_zone="span")
    assert moved.cross_cell and server.id not in guests(atoll, "host3")
    confirm_and_validate(atoll, moved)
    atoll.assert_clean()


def test_s8_anti_affinity_group_across_cells(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll, cells=THIRD_HOST_IN_CELL1, weights={"host1": 100.0, "host3": 50.0})
    group = atoll.user.ok(
        "POST",
        "/os-server-groups",
        200,
        version="2.64",
        json={"server_group": {"name": "apart", "policy": "anti-affinity"}},
    )["server_group"]["id"]
    first = boot(atoll, "s8-a", hints={"group": group})
    second = boot(atoll, "s8-b", hints={"group": group})
    assert admin_server(atoll, first.id)["OS-EXT-SRV-ATTR:host"] == "host1"
    assert admin_server(atoll, second.id)["OS-EXT-SRV-ATTR:host"] == "host3"

    # host2 is the only host that keeps the policy: the move crosses cells
    moved = resize_and_validate(atoll, first, flavor=None, target_host="host2")
    confirm_and_validate(atoll, moved)
    members = atoll.user.ok("GET", f"/os-server-groups/{group}")["server_group"]["members"]
    assert sorted(members) == sorted([first.id, second.id])
    member_hosts = {admin_server(atoll, m)["OS-EXT-SRV-ATTR:host"] for m in members}
    assert member_hosts == {"host2", "host3"}
    assert {cell_of(atoll, h) for h in member_hosts} == {"cell1", "cell2"}

    # moving the other member onto host2 breaks the policy: scheduling fails
    action(atoll, second.id, {"migrate": {"host": "host2"}}, version="2.56")
    (failed,) = migrations(atoll, second.id)
    wait_migration(atoll, second.id, failed["uuid"], "error")
    settled = wait_until(
        "the second member to settle",
        lambda: (s := admin_server(atoll, second.id))["OS-EXT-STS:task_state"] is None and s,
    )
    assert settled["OS-EXT-SRV-ATTR:host"] == "host3"
    assert settled["status"] == "ACTIVE", settled  # as in Nova: no host found, nothing broken
    assert guests(atoll, "host3") == {second.id: RUNNING}
    assert consumer_allocations(atoll, failed["uuid"]) == {}
    assert consumer_allocations(atoll, second.id) == {"host3": FLAVORS["1"].allocation(False)}
    assert second.id not in provider_allocations(atoll, "host2")
    assert cell_copies(atoll, "cell2", second.id) == []
    atoll.assert_clean()


# --- S9: auto-confirm ---------------------------------------------------------------------------


def test_s9_auto_confirm_after_the_window_even_after_api_db_errors(
    make_atoll,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="atoll")
    atoll = deploy(make_atoll, resize_confirm_window=1.0, periodic_interval=0.2)
    server = boot(atoll, "s9")
    # the API database is unreachable for the conductor's auto-confirm
    set_faults(
        atoll, {"conductor.auto_confirm.api_db": "raise:CellUnavailable:API database unreachable"}
    )
    moved = resize_and_validate(atoll, server, target_host="host2")
    since = notification_mark(atoll)

    wait_until(
        "'Error auto-confirming resize' in the log",
        lambda: any("Error auto-confirming resize" in r.getMessage() for r in caplog.records),
        timeout=15,
    )
    time.sleep(0.5)  # a few more periodic runs while the API DB is down
    # nothing is lost: still VERIFY_RESIZE, migration finished, both allocations held
    shown = admin_server(atoll, server.id)
    assert (shown["status"], shown["OS-EXT-STS:task_state"]) == ("VERIFY_RESIZE", None)
    assert shown["OS-EXT-SRV-ATTR:host"] == "host2"
    (current,) = migrations(atoll, server.id)
    assert current["status"] == "finished"
    assert consumer_allocations(atoll, moved.migration_uuid) == {
        "host1": FLAVORS["1"].allocation(False)
    }
    assert consumer_allocations(atoll, server.id) == {"host2": FLAVORS["2"].allocation(False)}
    assert [(c["hidden"], c["deleted"]) for c in cell_copies(atoll, "cell1", server.id)] == [
        (True, False)
    ]

    # the API DB is back: the conductor confirms it (S1's confirm checks)
    set_faults(atoll, {})
    atoll.wait_for(atoll.admin, server.id, "ACTIVE")
    check_confirmed(atoll, moved, since)
    assert provider_allocations(atoll, "host1") == {}
    assert hypervisor_usage(atoll)["host1"] == ZERO
    atoll.assert_clean()


# --- S10, S11: stopped servers -------------------------------------------------------------------


def test_s10_stopped_volume_backed_resize_confirm_then_migrate_back(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "s10", volume_backed=True, stopped=True)
    moved = resize_and_validate(atoll, server, target_host="host2")
    confirm_and_validate(atoll, moved)
    shown = admin_server(atoll, server.id)
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("SHUTOFF", SHUTDOWN)
    assert migrations(atoll, server.id)[0]["status"] == "confirmed"
    atoll.assert_clean()

    # back to cell1: no duplicate entry left behind by the first move
    back = resize_and_validate(
        atoll,
        server,
        flavor=None,
        host="host1",
        target_host="host1",
        earlier_migrations=1,
        min_actions=4,
    )
    confirm_and_validate(atoll, back)
    assert admin_server(atoll, server.id)["status"] == "SHUTOFF"
    atoll.assert_clean()


def test_s11_stopped_image_backed_resize_revert_then_migrate(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "s11", stopped=True)
    moved = resize_and_validate(atoll, server, target_host="host2")
    revert_and_validate(atoll, moved)
    shown = admin_server(atoll, server.id)
    assert (shown["status"], shown["OS-EXT-STS:power_state"]) == ("SHUTOFF", SHUTDOWN)
    assert migrations(atoll, server.id)[0]["status"] == "reverted"
    atoll.assert_clean()

    again = resize_and_validate(
        atoll,
        server,
        flavor=None,
        host="host2",
        target_host="host2",
        earlier_migrations=1,
        min_actions=4,
    )
    confirm_and_validate(atoll, again)
    assert admin_server(atoll, server.id)["status"] == "SHUTOFF"
    atoll.assert_clean()


# --- S12, S13: a failed move rolls back, then a retry succeeds --------------------------------


def fail_move_and_recover(atoll: Atoll, server: Booted, faults: dict[str, str], error: str) -> None:
    """Resize with ``faults`` on; check the rollback (S12's list); hard reboot; retry."""
    set_faults(atoll, faults)
    since = notification_mark(atoll)
    images_before = {i["id"] for i in images_for(atoll, server.id)}
    start_move(atoll, server, flavor="2")
    atoll.wait_for(atoll.admin, server.id, "ERROR")
    wait_notification(atoll, server.id, "compute_task.migrate_server.error", since)
    failed = admin_server(atoll, server.id)

    assert failed["OS-EXT-STS:task_state"] is None
    assert error in failed["fault"]["message"], failed["fault"]
    assert failed["OS-EXT-SRV-ATTR:host"] == "host1"
    assert failed["flavor"]["original_name"] == "m1.tiny"
    (mig,) = migrations(atoll, server.id)
    wait_migration(atoll, server.id, mig["uuid"], "error")
    # no copy in the target cell, not even a soft-deleted one; the source copy is the one
    assert cell_copies(atoll, "cell2", server.id) == []
    source_copies = cell_copies(atoll, "cell1", server.id)
    assert [(c["hidden"], c["deleted"]) for c in source_copies] == [(False, False)]
    # one volume attachment (the root volume's, on the source) or none (image-backed)
    attachments = volume_attachments(atoll, server.id)
    if server.volume_backed:
        assert [(a["volume_id"], a["host"]) for a in attachments] == [(server.root_volume, "host1")]
    else:
        assert attachments == []
    # the migration's allocations are gone; the server holds its flavor on the source
    vb = server.volume_backed
    assert consumer_allocations(atoll, mig["uuid"]) == {}
    assert consumer_allocations(atoll, server.id) == {"host1": FLAVORS["1"].allocation(vb)}
    assert provider_allocations(atoll, "host2") == {}
    # the guest is still on the source, nothing on the destination
    assert server.id in guests(atoll, "host1")
    assert guests(atoll, "host2") == {}
    assert hypervisor_usage(atoll)["host2"] == ZERO
    assert [b for b in port_bindings(atoll, server.port_id) if b["host"] == "host2"] == []
    # no temporary image outlives the move
    made = [i for i in images_for(atoll, server.id) if i["id"] not in images_before]
    assert all(i["status"] == "deleted" for i in made), made
    set_faults(atoll, {})
    atoll.assert_clean()

    server.api.ok("POST", f"/servers/{server.id}/action", 202, json={"reboot": {"type": "HARD"}})
    assert wait_status(atoll, server.api, server.id, "ACTIVE")["OS-EXT-STS:power_state"] == RUNNING
    retried = resize_and_validate(
        atoll, server, target_host="host2", earlier_migrations=1, min_actions=4
    )
    confirm_and_validate(atoll, retried)
    atoll.assert_clean()


def test_s12_volume_backed_resize_spawn_fails_on_destination(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "s12", volume_backed=True)
    fail_move_and_recover(
        atoll,
        server,
        {"virt.sim.spawn": "raise:HypervisorUnavailable;host=host2"},
        "Connection to the hypervisor is broken",
    )


def test_s13_image_backed_resize_destroy_fails_at_source(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "s13")
    fail_move_and_recover(
        atoll,
        server,
        {"virt.sim.destroy": "raise:VirtError:Simulated failure to destroy the guest;host=host1"},
        "Simulated failure to destroy the guest",
    )


# --- beyond Nova: E1, E4 ----------------------------------------------------------------------


def test_e1_prep_at_destination_fails_on_first_host_lands_on_second(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(
        make_atoll,
        cells={"cell1": ["host1"], "cell2": ["host2", "host3"]},
        weights={"host1": 100.0, "host2": 50.0, "host3": 10.0},
    )
    server = boot(atoll, "e1", volume_backed=True)
    set_faults(
        atoll, {"compute.prep_snapshot_based_resize_at_dest": "raise:InjectedFault;host=host2"}
    )
    moved = resize_and_validate(atoll, server, target_host="host3", tolerated_failures_on={"host2"})
    check_nothing_on(atoll, "host2", server)
    set_faults(atoll, {})
    confirm_and_validate(atoll, moved)
    check_nothing_on(atoll, "host2", server)
    atoll.assert_clean()


def race(*calls: Any) -> list[Any]:
    """Send the requests at once, from one thread each; their responses in order."""
    barrier = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


STATE_NAMED = re.compile(r"(vm_state|task_state) [a-z_-]+")


def test_e4_conflicting_actions_one_proceeds_the_other_gets_409(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll)
    server = boot(atoll, "e4")
    path = f"/servers/{server.id}/action"

    # a move in progress (spawn at the destination held for a moment): nothing else moves it
    set_faults(atoll, {"virt.sim.spawn": "hang:1.0;host=host2"})
    start_move(atoll, server, flavor="2")
    for body, version in (
        ({"resize": {"flavorRef": "3"}}, None),
        ({"migrate": None}, None),
        ({"migrate": {"host": "host2"}}, "2.56"),
        ({"confirmResize": None}, None),
        ({"revertResize": None}, None),
    ):
        message = conflict_message(atoll.admin.post(path, json=body, version=version))
        assert STATE_NAMED.search(message), message
    message = conflict_message(atoll.user.delete(f"/servers/{server.id}"))
    assert STATE_NAMED.search(message), message
    atoll.wait_for(atoll.admin, server.id, "VERIFY_RESIZE")
    set_faults(atoll, {})
    (mig,) = migrations(atoll, server.id)
    assert mig["status"] == "finished"

    # confirm and revert at once: exactly one proceeds
    confirm, revert = race(
        lambda: atoll.admin.post(path, json={"confirmResize": None}),
        lambda: atoll.admin.post(path, json={"revertResize": None}),
    )
    codes = sorted([confirm.status_code, revert.status_code])
    assert codes in ([202, 409], [204, 409]), (confirm.text, revert.text)
    loser = confirm if confirm.status_code == 409 else revert
    assert STATE_NAMED.search(conflict_message(loser)), loser.text
    won_confirm = confirm.status_code == 204
    # and while it runs, the other one is still refused
    late = atoll.admin.post(path, json={"revertResize" if won_confirm else "confirmResize": None})
    assert STATE_NAMED.search(conflict_message(late)), late.text
    atoll.wait_for(atoll.admin, server.id, "ACTIVE")
    wait_migration(atoll, server.id, mig["uuid"], "confirmed" if won_confirm else "reverted")
    assert admin_server(atoll, server.id)["OS-EXT-SRV-ATTR:host"] == (
        "host2" if won_confirm else "host1"
    )
    assert len(migrations(atoll, server.id)) == 1
    atoll.assert_clean()

    # a delete in progress (destroy held for a moment): no move starts
    host = admin_server(atoll, server.id)["OS-EXT-SRV-ATTR:host"]
    set_faults(atoll, {"virt.sim.destroy": f"hang:1.0;host={host}"})
    server.api.ok("DELETE", f"/servers/{server.id}", 204)
    resp = atoll.admin.post(path, json={"migrate": None})
    message = conflict_message(resp)
    assert "deleting" in message, message
    atoll.wait_gone(server.api, server.id)
    set_faults(atoll, {})
    atoll.assert_clean()


# --- same-cell moves ----------------------------------------------------------------------------


def test_same_cell_resize_then_confirm(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll, cells=THIRD_HOST_IN_CELL1)
    server = boot(atoll, "same-resize")
    moved = resize_and_validate(atoll, server, target_host="host3")
    assert not moved.cross_cell
    assert cell_copies(atoll, "cell2", server.id) == []
    confirm_and_validate(atoll, moved)
    assert provider_allocations(atoll, "host1") == {}
    assert hypervisor_usage(atoll)["host1"] == ZERO
    atoll.assert_clean()
    delete_and_validate(atoll, server)
    atoll.assert_clean()


def test_same_cell_migrate_then_revert(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = deploy(make_atoll, cells=THIRD_HOST_IN_CELL1)
    server = boot(atoll, "same-migrate")
    moved = resize_and_validate(atoll, server, flavor=None, target_host="host3")
    assert not moved.cross_cell
    revert_and_validate(atoll, moved)
    assert provider_allocations(atoll, "host3") == {}
    assert hypervisor_usage(atoll)["host3"] == ZERO
    assert [a["action"] for a in instance_actions(atoll, server.id)] == [
        "revertResize",
        "migrate",
        "create",
    ]
    atoll.assert_clean()
    delete_and_validate(atoll, server)
    atoll.assert_clean()


# --- "listed exactly once", all the way through -------------------------------------------------


def test_server_stays_visible_exactly_once_while_it_moves_across_cells(make_atoll) -> None:  # type: ignore[no-untyped-def]
    """GET /servers/{id} and GET /servers keep answering for the server, once, at every
    moment of a cross-cell resize, its confirm, a second resize and its revert."""
    atoll = deploy(make_atoll)
    server = boot(atoll, "visible")
    anomalies: list[str] = []
    polls = 0
    phase = "booted"
    stop = threading.Event()

    def watch(probe: Callable[[], str | None]) -> None:
        nonlocal polls
        while not stop.is_set():
            during = phase
            problem = probe()
            if problem:
                anomalies.append(f"{during}: {problem}")
            polls += 1

    def show() -> str | None:
        resp = server.api.get(f"/servers/{server.id}")
        return None if resp.status_code == 200 else f"GET /servers/{{id}}: {resp.text}"

    def listing() -> str | None:
        listed = [s["id"] for s in server.api.ok("GET", "/servers")["servers"]]
        count = listed.count(server.id)
        return None if count == 1 else f"GET /servers lists it {count} times"

    watchers = [threading.Thread(target=watch, args=(probe,)) for probe in (show, listing)]
    for watcher in watchers:
        watcher.start()
    try:
        phase = "resize 1->2"
        start_move(atoll, server, flavor="2")
        atoll.wait_for(atoll.admin, server.id, "VERIFY_RESIZE")
        phase = "confirm"
        action(atoll, server.id, {"confirmResize": None}, 204)
        atoll.wait_for(atoll.admin, server.id, "ACTIVE")
        phase = "resize 2->3"
        start_move(atoll, server, flavor="3")
        atoll.wait_for(atoll.admin, server.id, "VERIFY_RESIZE")
        phase = "revert"
        action(atoll, server.id, {"revertResize": None}, 202)
        atoll.wait_for(atoll.admin, server.id, "ACTIVE")
        phase = "reverted"
    finally:
        stop.set()
        for watcher in watchers:
            watcher.join(timeout=30)
    assert polls > 10, polls
    assert anomalies == [], f"{len(anomalies)} of {polls} polls: {anomalies[:5]}"
    assert admin_server(atoll, server.id)["OS-EXT-SRV-ATTR:host"] == "host2"
    atoll.assert_clean()
