"""``/os-migrations`` and ``/servers/{id}/migrations`` over HTTP.

Setup: a running embedded atoll (cells cell1 and cell2) with migration rows
written straight into both cells' databases, shaped like Nova's samples:

- cell1: LIVE_RUNNING and LIVE_ERROR (server A, compute1 -> compute2, Jan 2016),
  a hidden copy of RESIZE_MIGRATING (the cross-cell copy in the cell the server
  is not in) and a soft-deleted migration;
- cell2: RESIZE_ERROR and RESIZE_MIGRATING (server B, compute10 -> compute20,
  June 2016).

Row ids repeat across cells (each cell numbers its own rows), as they do in a
real deployment.  Bodies are compared key by key with the reference samples of
the microversion asked for.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from atoll.db.cell_models import Migration
from atoll.db.session import session_scope
from tests.harness import Atoll

SAMPLES = (
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "compute-api-samples"
)

SERVER_A = "8600d31b-d1a1-4632-b2ff-45c2be1a70ff"
SERVER_B = "9128d044-7b61-403e-b766-7547076ff6c1"
USER_A, PROJECT_A = "5c48ebaa-193f-4c5d-948a-f559cc92cd5e", "ef92ccff-00f3-46e4-b015-811110e36ee4"
USER_B, PROJECT_B = "78348f0e-97ee-4d70-ad34-189692673ea2", "9842f0f7-1229-4355-afe7-15ebdbb8c3d8"

LIVE_RUNNING = "12341d4b-346a-40d0-83c6-5f4f6892b650"
LIVE_ERROR = "22341d4b-346a-40d0-83c6-5f4f6892b650"
RESIZE_ERROR = "32341d4b-346a-40d0-83c6-5f4f6892b650"
RESIZE_MIGRATING = "42341d4b-346a-40d0-83c6-5f4f6892b650"
DELETED = "52341d4b-346a-40d0-83c6-5f4f6892b650"
NEWEST_FIRST = [RESIZE_MIGRATING, RESIZE_ERROR, LIVE_ERROR, LIVE_RUNNING]


def sample(*parts: str) -> Any:
    return json.loads((SAMPLES.joinpath(*parts)).read_text())


def keys(item: dict[str, Any]) -> set[str]:
    return set(item)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def migration(uuid: str, **kw: Any) -> Migration:
    return Migration(uuid=uuid, **kw)


def live(uuid: str, status: str, created: str) -> Migration:
    return migration(
        uuid,
        instance_uuid=SERVER_A,
        source_compute="compute1",
        dest_compute="compute2",
        source_node="node1",
        dest_node="node2",
        dest_host="1.2.3.4",
        old_flavor_id="1",
        new_flavor_id="1",
        status=status,
        migration_type="live-migration",
        user_id=USER_A,
        project_id=PROJECT_A,
        created_at=at(created),
        updated_at=at(created),
    )


def resize(uuid: str, status: str, created: str, **kw: Any) -> Migration:
    fields: dict[str, Any] = {
        "instance_uuid": SERVER_B,
        "source_compute": "compute10",
        "dest_compute": "compute20",
        "source_node": "node10",
        "dest_node": "node20",
        "dest_host": "5.6.7.8",
        "old_flavor_id": "5",
        "new_flavor_id": "6",
        "status": status,
        "migration_type": "resize",
        "user_id": USER_B,
        "project_id": PROJECT_B,
        "created_at": at(created),
        "updated_at": at(created),
    }
    fields.update(kw)
    return migration(uuid, **fields)


def seed(atoll: Atoll) -> None:
    cells = atoll.runtime.cells
    with session_scope(cells.by_name("cell1").db_url) as s:
        s.add(live(LIVE_RUNNING, "running", "2016-01-29T11:42:02"))
        s.add(live(LIVE_ERROR, "error", "2016-01-29T12:42:02"))
        s.add(resize(RESIZE_MIGRATING, "migrating", "2016-06-23T14:42:02", hidden=True))
        gone = live(DELETED, "completed", "2016-01-30T12:42:02")
        s.add(gone)
        s.flush()
        gone.deleted = gone.id
    with session_scope(cells.by_name("cell2").db_url) as s:
        s.add(resize(RESIZE_ERROR, "error", "2016-06-23T13:42:02"))
        s.add(resize(RESIZE_MIGRATING, "migrating", "2016-06-23T14:42:02"))


@pytest.fixture
def seeded(atoll: Atoll) -> Atoll:
    seed(atoll)
    return atoll


def listed(atoll: Atoll, query: str = "", version: str = "2.80", **kw: Any) -> dict[str, Any]:
    return atoll.admin.ok("GET", f"/os-migrations{query}", version=version, **kw)


def uuids(body: dict[str, Any]) -> list[str]:
    return [m["uuid"] for m in body["migrations"]]


# --- fields per microversion --------------------------------------------------------------


def test_fields_per_microversion_match_the_samples(seeded: Atoll) -> None:
    v21 = listed(seeded, version="2.1")["migrations"]
    expected = keys(sample("os-migrations", "migrations-get.json")["migrations"][0])
    assert len(v21) == 4
    assert all(keys(m) == expected for m in v21)
    assert [m["instance_uuid"] for m in v21] == [SERVER_B, SERVER_B, SERVER_A, SERVER_A]

    v223 = listed(seeded, version="2.23")["migrations"]
    ref = sample("os-migrations", "v2.23", "migrations-get.json")["migrations"]
    with_links, without_links = keys(ref[0]), keys(ref[2])
    running = [m for m in v223 if m["status"] == "running"]
    assert len(running) == 1 and keys(running[0]) == with_links
    assert all(keys(m) == without_links for m in v223 if m["status"] != "running")
    mid = running[0]["id"]
    assert running[0]["links"] == [
        {
            "rel": "self",
            "href": f"http://127.0.0.1:8774/v2.1/servers/{SERVER_A}/migrations/{mid}",
        },
        {"rel": "bookmark", "href": f"http://127.0.0.1:8774/servers/{SERVER_A}/migrations/{mid}"},
    ]

    for version, name in (("2.59", "v2.59"), ("2.66", "v2.66"), ("2.80", "v2.80")):
        body = listed(seeded, version=version)
        ref = sample("os-migrations", name, "migrations-get.json")["migrations"]
        assert [keys(m) for m in body["migrations"]] == [keys(m) for m in ref], version
        assert uuids(body) == NEWEST_FIRST
        assert "migrations_links" not in body

    newest = listed(seeded)["migrations"][0]
    assert newest == {
        "id": newest["id"],
        "status": "migrating",
        "instance_uuid": SERVER_B,
        "source_compute": "compute10",
        "dest_compute": "compute20",
        "source_node": "node10",
        "dest_node": "node20",
        "dest_host": "5.6.7.8",
        "old_instance_type_id": 5,
        "new_instance_type_id": 6,
        "created_at": "2016-06-23T14:42:02.000000",
        "updated_at": "2016-06-23T14:42:02.000000",
        "migration_type": "resize",
        "uuid": RESIZE_MIGRATING,
        "user_id": USER_B,
        "project_id": PROJECT_B,
    }


def test_hidden_and_deleted_rows_are_not_listed(seeded: Atoll) -> None:
    body = listed(seeded)
    assert uuids(body).count(RESIZE_MIGRATING) == 1
    assert DELETED not in uuids(body)
    # the visible copy is cell2's (its row id there is 2; cell1's hidden copy is row 3)
    assert body["migrations"][0]["id"] == 2
    assert listed(seeded, "?hidden=1")["migrations"] == []
    assert uuids(listed(seeded, "?hidden=0")) == NEWEST_FIRST


# --- filters --------------------------------------------------------------------------------


FILTER_CASES = [
    (f"?instance_uuid={SERVER_A}", "2.80", [LIVE_ERROR, LIVE_RUNNING]),
    ("?status=error", "2.80", [RESIZE_ERROR, LIVE_ERROR]),
    ("?status=error&status=running", "2.80", [RESIZE_ERROR, LIVE_ERROR, LIVE_RUNNING]),
    ("?migration_type=resize", "2.80", [RESIZE_MIGRATING, RESIZE_ERROR]),
    ("?migration_type=live-migration", "2.80", [LIVE_ERROR, LIVE_RUNNING]),
    ("?migration_type=evacuation", "2.80", []),
    ("?host=compute2", "2.80", [LIVE_ERROR, LIVE_RUNNING]),  # a destination
    ("?host=compute10", "2.80", [RESIZE_MIGRATING, RESIZE_ERROR]),  # a source
    ("?host=nowhere", "2.80", []),
    ("?source_compute=compute1", "2.80", [LIVE_ERROR, LIVE_RUNNING]),
    ("?source_compute=compute2", "2.80", []),
    ("?host=compute20&status=migrating", "2.80", [RESIZE_MIGRATING]),
    ("?changes-since=2016-06-23T13:42:02", "2.59", [RESIZE_MIGRATING, RESIZE_ERROR]),
    ("?changes-since=2016-06-23T15:42:02%2B01:00", "2.59", [RESIZE_MIGRATING]),
    ("?changes-before=2016-01-29T11:42:02", "2.66", [LIVE_RUNNING]),
    (
        "?changes-since=2016-01-29T12:00:00&changes-before=2016-06-23T14:00:00",
        "2.66",
        [RESIZE_ERROR, LIVE_ERROR],
    ),
    (f"?user_id={USER_A}", "2.80", [LIVE_ERROR, LIVE_RUNNING]),
    (f"?project_id={PROJECT_B}", "2.80", [RESIZE_MIGRATING, RESIZE_ERROR]),
    (f"?project_id={PROJECT_B}&user_id={USER_A}", "2.80", []),
]


def test_filters(seeded: Atoll) -> None:
    for query, version, expected in FILTER_CASES:
        assert uuids(listed(seeded, query, version=version)) == expected, (query, version)


def test_filters_that_an_older_microversion_ignores(seeded: Atoll) -> None:
    # before 2.59 unknown parameters (and changes-since, limit, marker) are ignored, like Nova
    for query in ("?changes-since=2016-06-23T13:42:02", "?limit=1", f"?user_id={USER_A}", "?x=1"):
        body = listed(seeded, query, version="2.58")
        assert len(body["migrations"]) == 4, query
        assert "migrations_links" not in body


BAD_QUERIES = [
    ("?changes-before=2016-01-29T11:42:02", "2.65", "'changes-before' was unexpected"),
    (f"?user_id={USER_A}", "2.79", "'user_id' was unexpected"),
    ("?foo=1&bar=2", "2.80", "('bar', 'foo' were unexpected)"),
    ("?changes-since=yesterday", "2.59", "'yesterday' is not a 'date-time'"),
    ("?changes-before=soon", "2.66", "'soon' is not a 'date-time'"),
    (
        "?changes-since=2016-06-23T00:00:00&changes-before=2016-01-01T00:00:00",
        "2.66",
        "changes-since must be less than or equal to changes-before",
    ),
    ("?limit=-1", "2.59", "less than the minimum of 0"),
    ("?limit=many", "2.59", "is not an integer"),
    ("?marker=00000000-0000-0000-0000-000000000000", "2.59", "could not be found"),
    (f"?marker={DELETED}", "2.59", "could not be found"),
]


def test_bad_queries_are_400(seeded: Atoll) -> None:
    for query, version, message in BAD_QUERIES:
        resp = seeded.admin.get(f"/os-migrations{query}", version=version)
        assert resp.status_code == 400, (query, resp.text)
        assert message in resp.json()["badRequest"]["message"], (query, resp.text)


# --- paging -----------------------------------------------------------------------------------


def test_paging_with_limit_and_marker_across_cells(seeded: Atoll) -> None:
    first = listed(seeded, "?limit=1", version="2.59")
    ref = sample("os-migrations", "v2.59", "migrations-get-with-limit.json")
    assert set(first) == set(ref) == {"migrations", "migrations_links"}
    assert uuids(first) == [RESIZE_MIGRATING]
    assert first["migrations_links"] == [
        {
            "rel": "next",
            "href": f"http://127.0.0.1:8774/v2.1/os-migrations?limit=1&marker={RESIZE_MIGRATING}",
        }
    ]
    seen: list[str] = []
    href = first["migrations_links"][0]["href"]
    seen += uuids(first)
    while True:
        path = href.split("/v2.1", 1)[1]
        page = seeded.admin.ok("GET", path, version="2.59")
        seen += uuids(page)
        if "migrations_links" not in page:
            break
        href = page["migrations_links"][0]["href"]
    assert seen == NEWEST_FIRST

    # a page that ends the list exactly still links on (the next one is empty), like Nova
    two = listed(seeded, f"?limit=2&marker={RESIZE_ERROR}", version="2.59")
    assert uuids(two) == [LIVE_ERROR, LIVE_RUNNING]
    assert "marker=" + LIVE_RUNNING in two["migrations_links"][0]["href"]
    assert listed(seeded, f"?marker={LIVE_RUNNING}", version="2.59")["migrations"] == []

    # the marker and the filters together; other parameters stay in the next link
    body = listed(seeded, f"?limit=1&marker={RESIZE_MIGRATING}&migration_type=resize")
    assert uuids(body) == [RESIZE_ERROR]
    assert "migration_type=resize" in body["migrations_links"][0]["href"]
    assert listed(seeded, "?limit=0", version="2.59")["migrations"] == []


def test_marker_sample_shape(seeded: Atoll) -> None:
    body = listed(seeded, f"?marker={LIVE_ERROR}", version="2.80")
    ref = sample("os-migrations", "v2.80", "migrations-get-with-marker.json")
    assert [keys(m) for m in body["migrations"]] == [keys(m) for m in ref["migrations"]]
    assert uuids(body) == [LIVE_RUNNING]


# --- who may list, and a cell that does not answer -------------------------------------------


def test_non_admin_is_forbidden(seeded: Atoll) -> None:
    for api in (seeded.user, seeded.other):
        resp = api.get("/os-migrations")
        assert resp.status_code == 403, resp.text
        assert "os_compute_api:os-migrations:index" in resp.json()["forbidden"]["message"]


def test_an_unreachable_cell_is_skipped(seeded: Atoll, tmp_path: Path) -> None:
    from sqlalchemy import update

    from atoll.db.api_models import CellMapping

    api_db = seeded.runtime.settings.api_db
    cell2 = seeded.runtime.cells.by_name("cell2")
    broken = f"sqlite:///{tmp_path}/no-such-dir/cell2.sqlite"
    with session_scope(api_db) as s:
        s.execute(
            update(CellMapping).where(CellMapping.id == cell2.id).values(database_connection=broken)
        )
    seeded.runtime.cells.refresh()
    try:
        body = listed(seeded)
        assert uuids(body) == [LIVE_ERROR, LIVE_RUNNING]
    finally:
        with session_scope(api_db) as s:
            s.execute(
                update(CellMapping)
                .where(CellMapping.id == cell2.id)
                .values(database_connection=cell2.db_url)
            )
        seeded.runtime.cells.refresh()
    assert uuids(listed(seeded)) == NEWEST_FIRST


# --- /servers/{id}/migrations ---------------------------------------------------------------


@pytest.fixture
def moving(atoll: Atoll) -> tuple[Atoll, str, dict[str, int]]:
    """A server of alice's with a resize in progress, a finished cold migration, an
    errored evacuation and a running live migration in its cell, plus a hidden copy of
    the resize in the other cell."""
    server = atoll.create_server()
    uuid = server["id"]
    cell = atoll.runtime.cells.for_instance(uuid)
    other = next(c for c in atoll.runtime.cells.all() if c.name in ("cell1", "cell2") and c != cell)
    common = {
        "instance_uuid": uuid,
        "source_compute": "host1",
        "dest_compute": "host3",
        "source_node": "host1",
        "dest_node": "host3",
        "dest_host": "127.0.0.1",
        "old_flavor_id": "1",
        "new_flavor_id": "2",
        "user_id": "alice",
        "project_id": "demo",
    }
    ids: dict[str, int] = {}
    with session_scope(cell.db_url) as s:
        for name, kind, status, minute in (
            ("resize", "resize", "migrating", 4),
            ("cold", "migration", "confirmed", 1),
            ("evacuation", "evacuation", "error", 2),
            ("live", "live-migration", "running", 3),
        ):
            row = Migration(
                migration_type=kind,
                status=status,
                created_at=at(f"2026-01-01T10:0{minute}:00"),
                **common,
            )
            s.add(row)
            s.flush()
            ids[name] = row.id
    with session_scope(other.db_url) as s:
        s.add(
            Migration(
                migration_type="resize",
                status="migrating",
                hidden=True,
                created_at=at("2026-01-01T10:04:00"),
                **common,
            )
        )
    return atoll, uuid, ids


def test_server_migrations_lists_those_in_progress(
    moving: tuple[Atoll, str, dict[str, int]],
) -> None:
    atoll, uuid, ids = moving
    base = f"/servers/{uuid}/migrations"
    assert atoll.admin.get(base, version="2.22").status_code == 404
    for version, name in (("2.23", "v2.23"), ("2.59", "v2.59"), ("2.80", "v2.80")):
        body = atoll.admin.ok("GET", base, version=version)
        ref = sample("server-migrations", name, "migrations-index.json")["migrations"][0]
        assert [m["id"] for m in body["migrations"]] == [ids["resize"], ids["live"]], version
        assert all(keys(m) == keys(ref) for m in body["migrations"]), version
    resize = atoll.admin.ok("GET", base)["migrations"][0]
    assert resize["server_uuid"] == uuid and resize["status"] == "migrating"
    assert resize["memory_total_bytes"] is None and resize["disk_processed_bytes"] is None
    assert resize["user_id"] == "alice" and resize["project_id"] == "demo"

    for version, name in (("2.23", "v2.23"), ("2.59", "v2.59"), ("2.80", "v2.80")):
        shown = atoll.admin.ok("GET", f"{base}/{ids['resize']}", version=version)
        ref = sample("server-migrations", name, "migrations-get.json")
        assert set(shown) == {"migration"}
        assert keys(shown["migration"]) == keys(ref["migration"]), version
    for missing in (str(ids["cold"]), "99999", "abc", "0", "99999999999999"):
        resp = atoll.admin.get(f"{base}/{missing}")
        assert resp.status_code == 404, (missing, resp.text)
    assert "not in progress" in atoll.admin.get(f"{base}/{ids['cold']}").text


def test_server_migrations_policy(moving: tuple[Atoll, str, dict[str, int]]) -> None:
    atoll, uuid, ids = moving
    base = f"/servers/{uuid}/migrations"
    assert atoll.user.get(base).status_code == 403  # the owner: admin-only by default
    assert atoll.user.get(f"{base}/{ids['resize']}").status_code == 403
    assert atoll.user.delete(f"{base}/{ids['resize']}").status_code == 403
    assert atoll.other.get(base).status_code == 404  # another project: no such server
    unknown = "/servers/00000000-0000-0000-0000-000000000000/migrations"
    assert atoll.admin.get(unknown).status_code == 404
    assert atoll.admin.get("/servers/not-a-uuid/migrations").status_code == 404


def test_abort_and_force_complete(moving: tuple[Atoll, str, dict[str, int]]) -> None:
    atoll, uuid, ids = moving
    base = f"/servers/{uuid}/migrations"
    for name in ("resize", "cold", "evacuation"):
        resp = atoll.admin.delete(f"{base}/{ids[name]}")
        assert resp.status_code == 400, resp.text
        assert "Only live migrations can be aborted" in resp.json()["badRequest"]["message"]
    assert atoll.admin.delete(f"{base}/99999").status_code == 404
    assert atoll.admin.delete(f"{base}/{ids['resize']}", version="2.23").status_code == 404
    # a live migration (atoll runs none) in an abortable state: nothing to abort here
    assert atoll.admin.delete(f"{base}/{ids['live']}").status_code == 409

    action = f"{base}/{ids['resize']}/action"
    resp = atoll.admin.post(action, json={"force_complete": None})
    assert resp.status_code == 400 and "Only live migrations" in resp.text
    assert atoll.admin.post(action, json={"force_complete": 1}).status_code == 400
    assert (
        atoll.admin.post(f"{base}/99999/action", json={"force_complete": None}).status_code == 404
    )
    # the migration is still there, untouched
    assert atoll.admin.ok("GET", f"{base}/{ids['resize']}")["migration"]["status"] == "migrating"


def test_os_migrations_lists_the_servers_moves_once(
    moving: tuple[Atoll, str, dict[str, int]],
) -> None:
    atoll, uuid, ids = moving
    body = listed(atoll, f"?instance_uuid={uuid}")
    assert sorted(m["id"] for m in body["migrations"]) == sorted(ids.values())
    live = next(m for m in body["migrations"] if m["migration_type"] == "live-migration")
    assert live["links"][0]["href"].endswith(f"/servers/{uuid}/migrations/{ids['live']}")
    assert all("links" not in m for m in body["migrations"] if m is not live)
