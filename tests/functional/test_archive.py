"""`atoll db archive`: soft-deleted rows move to the shadow tables, live rows stay.

Scenarios:

- servers created and deleted through the API of a running embedded atoll,
  then `atoll db archive` run as a separate process on its data directory:
  the deleted servers' rows (instance, actions and events, block device
  mappings, interfaces, faults, migrations) are in the shadow tables, the API
  DB forgot them, the live server kept every row, a second run moves nothing;
- one dataset of every kind of row (a deleted server with its records, a
  live one with a soft-deleted fault and event, a uuid with a deleted and a
  live row, deleted services with and without compute nodes) archived on
  SQLite, PostgreSQL and MariaDB: ``--before``, ``max_rows`` and a second pass;
- the API DB purge (mappings, request specs, group members) and a cell that
  does not answer (skipped, reported, exit 1).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Table, delete, func, inspect, select

from atoll.db import archive, migrate
from atoll.db.api_models import (
    CellMapping,
    InstanceGroup,
    InstanceGroupMember,
    InstanceMapping,
    RequestSpec,
)
from atoll.db.cell_models import (
    BlockDeviceMapping,
    CellBase,
    ComputeNode,
    Instance,
    InstanceAction,
    InstanceActionEvent,
    InstanceFault,
    Migration,
    Service,
    VirtualInterface,
)
from atoll.db.session import get_engine, session_scope
from atoll.db.shadow import SHADOW_TABLES, shadow_of
from tests.dbs import mysql_db, postgres_db
from tests.harness import Atoll

ATOLL = [sys.executable, "-m", "atoll.cli.main"]
SOFT_DELETED = {
    "instances",
    "block_device_mappings",
    "virtual_interfaces",
    "instance_faults",
    "migrations",
    "instance_actions",
    "instance_actions_events",
    "services",
    "compute_nodes",
}
RELATED_BY_UUID = ("block_device_mappings", "virtual_interfaces", "instance_faults", "migrations")


def run_cli(
    *args: str, data_dir: Path, check: bool = True, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATOLL_DATA_DIR": str(data_dir), "COLUMNS": "200", **extra_env}
    result = subprocess.run([*ATOLL, *args], capture_output=True, text=True, env=env, timeout=180)
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def table(name: str) -> Table:
    return CellBase.metadata.tables[name]


def rows(url: str, name: str, **where: Any) -> list[dict[str, Any]]:
    t = table(name) if not name.startswith("shadow_") else SHADOW_TABLES[name[7:]]
    stmt = select(t)
    for column, value in where.items():
        stmt = stmt.where(
            t.c[column].in_(value) if isinstance(value, list | set) else t.c[column] == value
        )
    with session_scope(url) as s:
        return [dict(r._mapping) for r in s.execute(stmt)]


def count(url: str, name: str) -> int:
    t = table(name) if not name.startswith("shadow_") else SHADOW_TABLES[name[7:]]
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(t)) or 0


# --- the shadow schema ------------------------------------------------------------------------


def test_every_soft_deleted_table_has_a_shadow_twin(tmp_path: Path) -> None:
    assert set(SHADOW_TABLES) == SOFT_DELETED
    url = f"sqlite:///{tmp_path / 'cell.sqlite'}"
    migrate.upgrade("cell", url)
    insp = inspect(get_engine(url))
    for name in SOFT_DELETED:
        live, shadow = table(name), shadow_of(name)
        assert [c.name for c in shadow.columns] == [c.name for c in live.columns]
        assert [str(c.type) for c in shadow.columns] == [str(c.type) for c in live.columns]
        # in the migrated database: no key, no unique constraint, no foreign key
        assert insp.get_pk_constraint(shadow.name)["constrained_columns"] == []
        assert insp.get_unique_constraints(shadow.name) == []
        assert insp.get_foreign_keys(shadow.name) == []
        assert all(not ix["unique"] for ix in insp.get_indexes(shadow.name))
        columns = {c["name"]: c for c in insp.get_columns(shadow.name)}
        assert set(columns) == {c.name for c in live.columns}


# --- through the API and the CLI ---------------------------------------------------------------


def _api_rows(atoll: Atoll, uuids: list[str]) -> dict[str, int]:
    api_db = atoll.runtime.settings.api_db
    with session_scope(api_db) as s:
        return {
            "mappings": s.scalar(
                select(func.count())
                .select_from(InstanceMapping)
                .where(InstanceMapping.instance_uuid.in_(uuids))
            )
            or 0,
            "specs": s.scalar(
                select(func.count())
                .select_from(RequestSpec)
                .where(RequestSpec.instance_uuid.in_(uuids))
            )
            or 0,
        }


def test_archive_after_deleting_servers_through_the_api(atoll: Atoll) -> None:
    doomed = [atoll.create_server(name=f"doomed-{i}")["id"] for i in range(2)]
    keeper = atoll.create_server(name="keeper")["id"]
    cell_of = {u: atoll.runtime.cells.for_instance(u) for u in [*doomed, keeper]}
    # a finished migration and a fault recorded for a doomed server, a soft-deleted
    # fault for the keeper: the first go with their server, the last goes alone
    with session_scope(cell_of[doomed[0]].db_url) as s:
        s.add(Migration(instance_uuid=doomed[0], status="confirmed", migration_type="migration"))
        s.add(InstanceFault(instance_uuid=doomed[0], code=500, message="boom"))
    with session_scope(cell_of[keeper].db_url) as s:
        fault = InstanceFault(instance_uuid=keeper, code=500, message="old news")
        s.add(fault)
        s.flush()
        fault.deleted, fault.deleted_at = fault.id, dt.datetime(2020, 1, 1)
    for uuid in doomed:
        atoll.user.ok("DELETE", f"/servers/{uuid}", 204)
    for uuid in doomed:
        atoll.wait_gone(atoll.user, uuid)

    def deleted_listing() -> set[str]:
        body = atoll.admin.ok("GET", "/servers/detail?all_tenants=1&deleted=true")
        return {s["id"] for s in body["servers"]}

    assert set(doomed) <= deleted_listing()
    assert _api_rows(atoll, doomed) == {"mappings": 2, "specs": 2}
    keeper_before = {
        name: rows(cell_of[keeper].db_url, name, instance_uuid=keeper)
        for name in ("block_device_mappings", "virtual_interfaces", "instance_actions")
    }
    assert keeper_before["instance_actions"], "the keeper's create action is recorded"

    doomed_before = {
        (uuid, name): len(rows(cell_of[uuid].db_url, name, instance_uuid=uuid))
        for uuid in doomed
        for name in (*RELATED_BY_UUID, "instance_actions")
    }
    assert all(doomed_before[(u, "virtual_interfaces")] == 1 for u in doomed)

    data_dir = atoll.embedded.settings.data_dir
    out = run_cli("db", "archive", data_dir=data_dir).stdout
    assert "rows moved" in out and "instances" in out, out

    for uuid in doomed:
        url = cell_of[uuid].db_url
        assert rows(url, "instances", uuid=uuid) == []
        archived = rows(url, "shadow_instances", uuid=uuid)
        assert len(archived) == 1 and archived[0]["deleted"] == archived[0]["id"]
        assert archived[0]["vm_state"] == "deleted"
        for name in (*RELATED_BY_UUID, "instance_actions"):
            assert rows(url, name, instance_uuid=uuid) == [], name
            shadow = rows(url, f"shadow_{name}", instance_uuid=uuid)
            assert len(shadow) == doomed_before[(uuid, name)], name
        actions = rows(url, "shadow_instance_actions", instance_uuid=uuid)
        assert {a["action"] for a in actions} >= {"create", "delete"}
        events = rows(url, "shadow_instance_actions_events", action_id=[a["id"] for a in actions])
        assert events, "the actions' events moved with them"
    url0 = cell_of[doomed[0]].db_url
    assert len(rows(url0, "shadow_migrations", instance_uuid=doomed[0])) == 1
    assert len(rows(url0, "shadow_instance_faults", instance_uuid=doomed[0])) == 1

    # the keeper: every live row where it was, only its soft-deleted fault moved
    kurl = cell_of[keeper].db_url
    assert rows(kurl, "instances", uuid=keeper)[0]["deleted"] == 0
    for name, before in keeper_before.items():
        assert rows(kurl, name, instance_uuid=keeper) == before, name
    assert rows(kurl, "instance_faults", instance_uuid=keeper) == []
    assert [f["message"] for f in rows(kurl, "shadow_instance_faults", instance_uuid=keeper)] == [
        "old news"
    ]
    for shadow in ("shadow_instances", "shadow_block_device_mappings", "shadow_instance_actions"):
        assert (
            rows(
                kurl,
                shadow,
                **{"uuid" if shadow == "shadow_instances" else "instance_uuid": keeper},
            )
            == []
        )

    # the API DB forgot the deleted servers, and the API no longer lists them
    assert _api_rows(atoll, doomed) == {"mappings": 0, "specs": 0}
    assert _api_rows(atoll, [keeper]) == {"mappings": 1, "specs": 1}
    assert not set(doomed) & deleted_listing()
    for uuid in doomed:
        assert atoll.admin.get(f"/servers/{uuid}").status_code == 404
    assert atoll.user.ok("GET", f"/servers/{keeper}")["server"]["status"] == "ACTIVE"
    actions = atoll.user.ok("GET", f"/servers/{keeper}/os-instance-actions")["instanceActions"]
    assert [a["action"] for a in actions] == ["create"]

    again = run_cli("db", "archive", data_dir=data_dir).stdout
    assert "nothing to archive" in again, again
    atoll.assert_clean()


def test_archive_command_options(tmp_path: Path) -> None:
    out = run_cli("db", "archive", "--help", data_dir=tmp_path).stdout
    for option in ("--max-rows", "--before", "--until-complete", "shadow tables"):
        assert option in out, option
    run_cli("db", "sync", data_dir=tmp_path)
    assert "nothing to archive" in run_cli("db", "archive", data_dir=tmp_path).stdout
    bad = run_cli("db", "archive", "--before", "last tuesday", data_dir=tmp_path, check=False)
    assert bad.returncode == 2 and "ISO 8601" in bad.stderr + bad.stdout
    zero = run_cli("db", "archive", "--max-rows", "0", data_dir=tmp_path, check=False)
    assert zero.returncode == 2
    no_api = run_cli(
        "db",
        "archive",
        data_dir=tmp_path,
        check=False,
        ATOLL_API_DB_URL=f"sqlite:///{tmp_path}/no/such/api.sqlite",
    )
    assert no_api.returncode == 3 and "API database did not answer" in no_api.stderr

    # rows in batches: --max-rows 2 leaves some, --until-complete finishes
    from atoll.cells import CellRegistry

    settings_url = f"sqlite:///{(tmp_path / 'api.sqlite').resolve()}"
    cell0 = CellRegistry(settings_url).refresh()[0]
    with session_scope(cell0.db_url) as s:
        for i in range(5):
            svc = Service(host=f"gone-{i}", binary="nova-compute")
            s.add(svc)
            s.flush()
            svc.deleted, svc.deleted_at = svc.id, dt.datetime(2026, 1, 1 + i)
    early = run_cli("db", "archive", "--before", "2026-01-03", data_dir=tmp_path).stdout
    assert count(cell0.db_url, "shadow_services") == 2, early
    partial = run_cli("db", "archive", "--max-rows", "2", data_dir=tmp_path).stdout
    assert "more rows remain" in partial and count(cell0.db_url, "shadow_services") == 4
    done = run_cli("db", "archive", "--max-rows", "1", "--until-complete", data_dir=tmp_path).stdout
    assert "more rows remain" not in done
    assert count(cell0.db_url, "shadow_services") == 5 and count(cell0.db_url, "services") == 0


def test_an_unreachable_cell_is_skipped_and_reported(tmp_path: Path) -> None:
    run_cli("db", "sync", data_dir=tmp_path)
    api_db = f"sqlite:///{(tmp_path / 'api.sqlite').resolve()}"
    with session_scope(api_db) as s:
        s.add(
            CellMapping(
                name="lost",
                database_connection=f"sqlite:///{tmp_path}/missing/dir/cell.sqlite",
                transport_url="none:///",
            )
        )
    result = run_cli("db", "archive", data_dir=tmp_path, check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "lost" in result.stdout and "unreachable" in result.stdout
    assert "did not answer" in result.stderr


# --- the API DB purge ---------------------------------------------------------------------------


def test_purge_api_records(tmp_path: Path) -> None:
    from atoll.cells import CellRegistry

    run_cli("db", "sync", data_dir=tmp_path)
    api_db = f"sqlite:///{(tmp_path / 'api.sqlite').resolve()}"
    cells = CellRegistry(api_db).refresh()
    cell = cells[0]
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    names = ("archived", "soft", "live", "unplaced_old", "unplaced_new", "no_mapping")
    uuid = {name: f"00000000-0000-0000-0000-{i:012d}" for i, name in enumerate(names)}
    with session_scope(cell.db_url) as s:
        for name, deleted in (("soft", True), ("live", False)):
            inst = Instance(uuid=uuid[name], project_id="p", user_id="u", flavor={})
            s.add(inst)
            s.flush()
            if deleted:
                inst.deleted = inst.id
    with session_scope(api_db) as s:
        group = InstanceGroup(name="g", policy="affinity", user_id="u", project_id="p")
        s.add(group)
        s.flush()
        for name in names:
            if name != "no_mapping":
                s.add(
                    InstanceMapping(
                        instance_uuid=uuid[name],
                        cell_id=None if name.startswith("unplaced") else cell.id,
                        project_id="p",
                        user_id="u",
                        queued_for_delete=name != "live",
                        updated_at=now - dt.timedelta(hours=1 if name == "unplaced_old" else 0),
                    )
                )
            s.add(RequestSpec(instance_uuid=uuid[name], spec={}))
            s.add(InstanceGroupMember(group_id=group.id, instance_uuid=uuid[name]))
    purged = archive.purge_api_records(api_db, cells)
    # "archived" (no row anywhere) and "unplaced_old" go; "soft" still has a row;
    # "unplaced_new" may still be placed; "no_mapping" was a stale spec and member
    assert purged == {"instance_group_members": 5, "instance_mappings": 2, "request_specs": 3}
    with session_scope(api_db) as s:
        mapped = set(s.scalars(select(InstanceMapping.instance_uuid)))
        specs = set(s.scalars(select(RequestSpec.instance_uuid)))
        members = set(s.scalars(select(InstanceGroupMember.instance_uuid)))
    assert mapped == specs == {uuid["soft"], uuid["live"], uuid["unplaced_new"]}
    assert members == {uuid["live"]}
    assert archive.purge_api_records(api_db, cells) == {}  # nothing more to do
    # "soft" archived: its mapping goes, but not while its cell does not answer
    with session_scope(cell.db_url) as s:
        s.execute(delete(Instance).where(Instance.uuid == uuid["soft"]))
    broken = dataclasses.replace(cell, db_url=f"sqlite:///{tmp_path}/no/such/cell.sqlite")
    assert archive.purge_api_records(api_db, [broken]) == {}
    assert archive.purge_api_records(api_db, [cell]) == {
        "instance_mappings": 1,
        "request_specs": 1,
    }


# --- one dataset on every database ------------------------------------------------------------


def _at(day: int, month: int = 1) -> dt.datetime:
    return dt.datetime(2026, month, day, 12, 0, 0)


def _seed(url: str) -> dict[str, Any]:
    """Rows of every kind; returns the uuids and ids the checks need."""
    ids: dict[str, Any] = {}

    def add(s: Any, row: Any, deleted_at: dt.datetime | None = None) -> Any:
        s.add(row)
        s.flush()
        if deleted_at is not None:
            row.deleted, row.deleted_at = row.id, deleted_at
        return row

    def server(s: Any, uuid: str, deleted_at: dt.datetime | None) -> Any:
        return add(
            s, Instance(uuid=uuid, project_id="p", user_id="u", flavor={"cur": {}}), deleted_at
        )

    with session_scope(url) as s:
        # D1: deleted in January, with everything recorded about it
        server(s, "d1", _at(1))
        a1 = add(s, InstanceAction(action="create", instance_uuid="d1", request_id="r1"))
        add(s, InstanceActionEvent(action_id=a1.id, event="compute_build"))
        add(s, InstanceActionEvent(action_id=a1.id, event="conductor_build"))
        add(s, InstanceFault(instance_uuid="d1", code=500, message="x"))
        add(
            s,
            BlockDeviceMapping(instance_uuid="d1", source_type="image", destination_type="local"),
            _at(1),
        )
        add(s, VirtualInterface(uuid="port-d1", instance_uuid="d1"), _at(1))
        add(s, Migration(instance_uuid="d1", status="confirmed", migration_type="resize"))
        # D2: deleted in March
        server(s, "d2", _at(1, 3))
        a2 = add(s, InstanceAction(action="delete", instance_uuid="d2", request_id="r2"))
        add(s, InstanceActionEvent(action_id=a2.id, event="compute_delete"))
        # L: live, with a soft-deleted fault and a soft-deleted event of a live action
        server(s, "live", None)
        a3 = add(s, InstanceAction(action="create", instance_uuid="live", request_id="r3"))
        add(s, InstanceActionEvent(action_id=a3.id, event="kept"))
        add(s, InstanceActionEvent(action_id=a3.id, event="dropped"), _at(20))
        add(s, InstanceFault(instance_uuid="live", code=400, message="old"), _at(15))
        add(
            s,
            BlockDeviceMapping(instance_uuid="live", source_type="image", destination_type="local"),
        )
        add(s, Migration(instance_uuid="live", status="migrating", migration_type="resize"))
        # X: a deleted row and a live row with the same uuid (the related rows are the live one's)
        server(s, "x", _at(5))
        server(s, "x", None)
        add(s, InstanceAction(action="create", instance_uuid="x", request_id="r4"))
        # services: S1 deleted with its deleted node; S2 deleted but a live node names it
        s1 = add(s, Service(host="s1", binary="nova-compute"))
        add(s, ComputeNode(host="s1", hypervisor_hostname="s1", service_id=s1.id), _at(10))
        s1.deleted, s1.deleted_at = s1.id, _at(10)
        s2 = add(s, Service(host="s2", binary="nova-compute"), _at(10))
        ids["cn2"] = add(s, ComputeNode(host="s2", hypervisor_hostname="s2", service_id=s2.id)).id
        add(s, Service(host="s3", binary="nova-compute"))
    return ids


def _totals(url: str) -> dict[str, int]:
    return {name: count(url, name) + count(url, f"shadow_{name}") for name in SOFT_DELETED}


def _check_no_live_row_moved(url: str) -> None:
    deleted_servers = {r["uuid"] for r in rows(url, "shadow_instances")}
    live_servers = {r["uuid"] for r in rows(url, "instances", deleted=0)}
    for name in SOFT_DELETED:
        for row in rows(url, f"shadow_{name}"):
            if row["deleted"]:
                continue
            # a live row is archived only with its deleted server (or action)
            if name == "instance_actions_events":
                action = rows(url, "shadow_instance_actions", id=row["action_id"])
                assert action, row
                continue
            assert name in (*RELATED_BY_UUID, "instance_actions"), (name, row)
            assert row["instance_uuid"] in deleted_servers - live_servers, (name, row)


def exercise_archive(url: str) -> None:
    ids = _seed(url)
    totals = _totals(url)

    moved = archive.archive_deleted_rows(url, before=_at(1, 2))
    assert moved == {
        "instance_actions_events": 3,  # D1's two, L's "dropped"
        "instance_actions": 1,
        "instance_faults": 2,  # D1's, L's old one
        "block_device_mappings": 1,
        "virtual_interfaces": 1,
        "migrations": 1,
        "instances": 2,  # D1, X's deleted row
        "compute_nodes": 1,
        "services": 1,
    }
    assert [r["uuid"] for r in rows(url, "instances")] == ["d2", "live", "x"]
    assert [r["event"] for r in rows(url, "instance_actions_events")] == ["compute_delete", "kept"]
    assert {r["instance_uuid"] for r in rows(url, "instance_actions")} == {"d2", "live", "x"}
    assert [r["instance_uuid"] for r in rows(url, "migrations")] == ["live"]
    assert [r["host"] for r in rows(url, "services")] == ["s2", "s3"]
    _check_no_live_row_moved(url)
    assert _totals(url) == totals

    # D2 (March) now: max_rows=1 still moves the server with its action and event
    assert archive.archive_deleted_rows(url, max_rows=1) == {
        "instance_actions_events": 1,
        "instance_actions": 1,
        "instances": 1,
    }
    assert archive.archive_deleted_rows(url) == {}  # S2 waits for its compute node
    with session_scope(url) as s:
        node = s.get(ComputeNode, ids["cn2"])
        node.deleted, node.deleted_at = node.id, _at(2, 3)
    assert archive.archive_deleted_rows(url) == {"compute_nodes": 1, "services": 1}
    assert archive.archive_deleted_rows(url) == {}
    _check_no_live_row_moved(url)
    assert _totals(url) == totals
    assert [r["uuid"] for r in rows(url, "instances")] == ["live", "x"]
    assert sorted(r["uuid"] for r in rows(url, "shadow_instances")) == ["d1", "d2", "x"]
    # archived rows keep their values, timestamps included
    (d1,) = rows(url, "shadow_instances", uuid="d1")
    assert d1["deleted_at"] == _at(1) and d1["flavor"] == {"cur": {}}


def test_archive_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cell.sqlite'}"
    migrate.upgrade("cell", url)
    exercise_archive(url)


@pytest.mark.postgres
def test_archive_on_postgresql() -> None:
    with postgres_db("atoll_archive") as url:
        migrate.upgrade("cell", url)
        exercise_archive(url)


@pytest.mark.mysql
def test_archive_on_mariadb() -> None:
    with mysql_db("atoll_archive") as url:
        migrate.upgrade("cell", url)
        exercise_archive(url)
