"""Each compute API resource over HTTP, checked against the reference samples' shapes.

The API runs on a runtime whose databases are built with ``create_all`` under
``tmp_path``: two cells of two hosts (host1, host2 in cell1; host3, host4 in
cell2), a conductor service, two flavors, an image, and a few servers of project
``demo`` in cell1.  Response bodies are compared key by key (recursively, with
scalar types) with the sample of the microversion asked for.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from atoll.api import policy
from atoll.api.app import create_app
from atoll.api.quotas import QuotaEngine
from atoll.config import Settings
from atoll.db.api_models import (
    ApiBase,
    BuildRequest,
    CellMapping,
    Flavor,
    HostMapping,
    InstanceGroup,
    InstanceGroupMember,
    InstanceMapping,
)
from atoll.db.cell_models import CellBase, ComputeNode, Instance, Service
from atoll.db.session import dispose_all, get_engine, session_scope
from atoll.db.types import new_uuid, utcnow
from atoll.exceptions import QuotaExceeded
from atoll.runtime import Runtime
from atoll.services import ServicesBase

SAMPLES = (
    Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "compute-api-samples"
)
ADMIN = "dev:admin:admin:admin"
MEMBER = "dev:alice:demo"
OTHER = "dev:mallory:evil"

SSH_KEY = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDx8nkQv/zgGgB4rMYmIf+6A4l6Rr+o/6lHBQdW5aYd44bd8JttDCE/"
    "F/pNRr0lRE+PiqSPO8nDPHw0010JeMH9gYgnnFlyY3/OcJ02RhIPyyxYpv9FhY+2YiUkpwFOcLImyrxEsYXpD/0d"
    "3ac30bNH6Sw9JD9UZHYcpSxsIbECHw== Generated-by-Nova"
)
SSH_FINGERPRINT = "1e:2c:9b:56:79:4b:45:77:f9:ca:7a:98:2c:b0:d5:3c"


# --- an embedded API on tmp_path -----------------------------------------------------------


@dataclass
class Api:
    runtime: Runtime
    client: TestClient
    image_id: str
    cell_ids: dict[str, int]

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str = ADMIN,
        version: str | None = None,
        body: Any = None,
    ) -> Any:
        headers = {"X-Auth-Token": token}
        if version is not None:
            headers["OpenStack-API-Version"] = f"compute {version}"
        return self.client.request(method, f"/v2.1{path}", headers=headers, json=body)

    def ok(self, method: str, path: str, status: int = 200, **kw: Any) -> Any:
        resp = self.call(method, path, **kw)
        assert resp.status_code == status, resp.text
        return resp.json() if resp.content else None

    def cell_db(self, name: str) -> str:
        return self.runtime.settings.cell_db_default(name)


def _instance(project: str, host: str, vcpus: int, ram: int, **kw: Any) -> Instance:
    return Instance(
        uuid=kw.pop("uuid", None) or new_uuid(),
        display_name=kw.pop("display_name", "vm"),
        project_id=project,
        user_id="alice",
        vm_state="active",
        host=host,
        node=host,
        flavor={"cur": {"vcpus": vcpus, "memory_mb": ram}},
        vcpus=vcpus,
        memory_mb=ram,
        **kw,
    )


def build_runtime(
    data_dir: Path, *, down_cell: bool = False, **overrides: Any
) -> tuple[Runtime, str, dict[str, int]]:
    """Databases from ``create_all``, two cells of two hosts, flavors 1 and 2, an image."""
    settings = Settings(data_dir=data_dir, **overrides)
    ApiBase.metadata.create_all(get_engine(settings.api_db))
    ServicesBase.metadata.create_all(get_engine(settings.services_db))
    runtime = Runtime(settings)
    runtime.placement.create_schema()
    now = utcnow()
    cell_ids: dict[str, int] = {}
    with session_scope(settings.api_db) as s:
        for index, cell_name in enumerate(("cell1", "cell2")):
            url = settings.cell_db_default(cell_name)
            CellBase.metadata.create_all(get_engine(url))
            cell = CellMapping(name=cell_name, database_connection=url, transport_url="memory://")
            s.add(cell)
            s.flush()
            cell_ids[cell_name] = cell.id
            with session_scope(url) as cs:
                for n in (1, 2):
                    host = f"host{index * 2 + n}"
                    s.add(HostMapping(host=host, cell_id=cell.id))
                    svc = Service(host=host, binary="nova-compute", topic="compute")
                    svc.last_seen_up = now
                    cs.add(svc)
                    cs.flush()
                    cs.add(
                        ComputeNode(
                            host=host,
                            hypervisor_hostname=host,
                            service_id=svc.id,
                            vcpus=16,
                            memory_mb=32768,
                            local_gb=400,
                            memory_mb_used=512,
                            local_gb_used=10,
                        )
                    )
                if cell_name == "cell1":
                    conductor = Service(host="controller", binary="nova-conductor")
                    conductor.last_seen_up = now
                    cs.add(conductor)
        if down_cell:
            gone = data_dir / "missing-dir" / "cell3.sqlite"
            cell = CellMapping(
                name="cell3", database_connection=f"sqlite:///{gone}", transport_url="memory://"
            )
            s.add(cell)
            s.flush()
            s.add(HostMapping(host="host5", cell_id=cell.id))
        s.add(Flavor(flavorid="1", name="m1.tiny", memory_mb=512, vcpus=1, root_gb=1))
        s.add(Flavor(flavorid="2", name="m1.small", memory_mb=2048, vcpus=1, root_gb=20))
    blob = data_dir / "image.raw"
    blob.write_bytes(b"\0" * 4096)
    image = runtime.images.create(
        "cirros", properties={"architecture": "x86_64", "auto_disk_config": "True"}
    )
    runtime.images.upload(image["id"], blob)
    return runtime, image["id"], cell_ids


def _make(tmp_path: Path, *, down_cell: bool = False) -> Iterator[Api]:
    runtime, image_id, cell_ids = build_runtime(tmp_path, down_cell=down_cell)
    app = create_app(runtime)
    with TestClient(app, client=("127.0.0.1", 40000), raise_server_exceptions=False) as client:
        yield Api(runtime, client, image_id, cell_ids)
    runtime.close()
    policy.reset()
    dispose_all()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    yield from _make(tmp_path)


@pytest.fixture
def api_down(tmp_path: Path) -> Iterator[Api]:
    """Like ``api`` with a third cell whose database cannot be opened (host5)."""
    yield from _make(tmp_path, down_cell=True)


# --- shapes ----------------------------------------------------------------------------------


def sample(relative: str) -> Any:
    path = SAMPLES / relative
    if not path.is_file():
        pytest.fail(f"reference sample {path} is missing: shared/ must sit beside the checkout")
    return json.loads(path.read_text())


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "null"


FREE_FORM = frozenset({"metadata", "extra_specs", "hosts", "rules", "topology"})


def assert_shape(
    actual: Any,
    expected: Any,
    path: str = "$",
    *,
    optional: frozenset[str] = frozenset(),
) -> None:
    """Same keys at every level, same scalar kinds (null matches anything)."""
    if expected is None or actual is None:
        return
    assert _kind(actual) == _kind(expected), f"{path}: {actual!r} vs sample {expected!r}"
    if isinstance(expected, dict):
        if path.rsplit(".", 1)[-1] in FREE_FORM:
            return
        missing = set(expected) - set(actual) - optional
        extra = set(actual) - set(expected)
        assert not missing and not extra, f"{path}: missing {missing}, unexpected {extra}"
        for key, value in expected.items():
            if key in actual:
                assert_shape(actual[key], value, f"{path}.{key}", optional=optional)
    elif isinstance(expected, list) and expected and actual:
        for item in actual:
            model = expected[0]
            if isinstance(item, dict) and "rel" in item:  # links: compare like with like
                model = next((e for e in expected if e.get("rel") == item["rel"]), model)
            assert_shape(item, model, f"{path}[]", optional=optional)


def assert_forbidden(resp: Any, rule: str | None = None) -> None:
    assert resp.status_code == 403, resp.text
    message = resp.json()["forbidden"]["message"]
    if rule:
        assert message == f"Policy doesn't allow {rule} to be performed."


def message(resp: Any) -> str:
    return next(iter(resp.json().values()))["message"]


# --- flavors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "folder"), [("2.1", ""), ("2.55", "v2.55/"), ("2.61", "v2.61/"), ("2.75", "v2.75/")]
)
def test_flavor_views_match_the_samples(api: Api, version: str, folder: str) -> None:
    listed = api.ok("GET", "/flavors", version=version)
    assert_shape(listed, sample(f"flavors/{folder}flavors-list-resp.json"))
    detail = api.ok("GET", "/flavors/detail", version=version)
    assert_shape(detail, sample(f"flavors/{folder}flavors-detail-resp.json"))
    shown = api.ok("GET", "/flavors/1", version=version)
    assert_shape(shown, sample(f"flavors/{folder}flavor-get-resp.json"))
    assert [f["id"] for f in listed["flavors"]] == ["1", "2"]
    flavor = shown["flavor"]
    assert (flavor["ram"], flavor["vcpus"], flavor["disk"]) == (512, 1, 1)
    assert flavor["swap"] == (0 if version == "2.75" else "")
    assert ("extra_specs" in flavor) == (version >= "2.61")


@pytest.mark.parametrize(("version", "folder"), [("2.1", ""), ("2.75", "v2.75/")])
def test_flavor_create_matches_the_sample(api: Api, version: str, folder: str) -> None:
    request = sample(f"flavor-manage/{folder}flavor-create-post-req.json")
    body = api.ok("POST", "/flavors", version=version, body=request)
    assert_shape(body, sample(f"flavor-manage/{folder}flavor-create-post-resp.json"))
    assert body["flavor"]["id"] == "10"
    assert body["flavor"]["rxtx_factor"] == 2.0
    assert api.ok("GET", "/flavors/10", version=version)["flavor"]["name"] == "test_flavor"


def test_flavor_create_generates_an_id_and_refuses_duplicates(api: Api) -> None:
    spec = {"name": "m2", "ram": 256, "vcpus": 2, "disk": 5, "swap": 128}
    created = api.ok("POST", "/flavors", body={"flavor": spec})["flavor"]
    assert len(created["id"]) == 36
    assert created["swap"] == 128
    dup = api.call("POST", "/flavors", body={"flavor": spec})
    assert dup.status_code == 409
    assert message(dup) == "Flavor with name m2 already exists."
    dup_id = api.call("POST", "/flavors", body={"flavor": {**spec, "name": "m3", "id": "1"}})
    assert dup_id.status_code == 409
    assert message(dup_id) == "Flavor with ID 1 already exists."


@pytest.mark.parametrize(
    ("flavor", "field"),
    [
        ({"name": "x", "ram": 0, "vcpus": 1, "disk": 1}, "ram"),
        ({"name": "x", "ram": True, "vcpus": 1, "disk": 1}, "ram"),
        ({"name": "x", "ram": 1, "vcpus": -1, "disk": 1}, "vcpus"),
        ({"name": " x", "ram": 1, "vcpus": 1, "disk": 1}, "name"),
        ({"name": "x", "ram": 1, "vcpus": 1, "disk": 1, "id": "a/b"}, "id"),
        ({"name": "x", "ram": 1, "vcpus": 1, "disk": 1, "rxtx_factor": 0}, "rxtx_factor"),
        ({"name": "x", "ram": 1, "vcpus": 1, "disk": 1, "description": "d"}, "description"),
    ],
)
def test_flavor_create_rejects_bad_input(api: Api, flavor: dict, field: str) -> None:
    resp = api.call("POST", "/flavors", body={"flavor": flavor})
    assert resp.status_code == 400, resp.text
    assert field in message(resp)


def test_flavor_management_is_admin_only(api: Api) -> None:
    spec = {"flavor": {"name": "x", "ram": 1, "vcpus": 1, "disk": 1}}
    rule = "os_compute_api:os-flavor-manage:%s"
    assert_forbidden(api.call("POST", "/flavors", token=MEMBER, body=spec), rule % "create")
    assert_forbidden(api.call("DELETE", "/flavors/1", token=MEMBER), rule % "delete")
    assert_forbidden(
        api.call(
            "PUT", "/flavors/1", token=MEMBER, version="2.55", body={"flavor": {"description": ""}}
        ),
        rule % "update",
    )
    assert api.call("GET", "/flavors/1", token=MEMBER).status_code == 200


def test_flavor_update_matches_the_sample(api: Api) -> None:
    request = sample("flavor-manage/v2.75/flavor-update-req.json")
    body = api.ok("PUT", "/flavors/1", version="2.75", body=request)
    assert_shape(body, sample("flavor-manage/v2.75/flavor-update-resp.json"))
    assert body["flavor"]["description"] == "updated description"


def test_flavor_delete(api: Api) -> None:
    assert api.call("DELETE", "/flavors/2").status_code == 202
    resp = api.call("GET", "/flavors/2")
    assert resp.status_code == 404
    assert message(resp) == "Flavor 2 could not be found."
    assert api.call("DELETE", "/flavors/2").status_code == 404


def test_flavor_filters_sorting_and_paging(api: Api) -> None:
    def ids(query: str, token: str = ADMIN) -> list[str]:
        return [f["id"] for f in api.ok("GET", f"/flavors{query}", token=token)["flavors"]]

    assert ids("?minRam=1024") == ["2"]
    assert ids("?minDisk=2") == ["2"]
    assert ids("?sort_key=memory_mb&sort_dir=desc") == ["2", "1"]
    first = api.ok("GET", "/flavors?limit=1")
    assert [f["id"] for f in first["flavors"]] == ["1"]
    next_href = first["flavors_links"][0]["href"]
    assert next_href == "http://testserver/v2.1/flavors?limit=1&marker=1"
    assert ids("?limit=1&marker=1") == ["2"]
    for query, text in [
        ("?minRam=big", "Invalid minRam filter [big]"),
        ("?minDisk=x", "Invalid minDisk filter [x]"),
        ("?sort_key=colour", "Sort key supplied is invalid: colour"),
        ("?sort_dir=up", "Unknown sort direction, must be 'desc' or 'asc'"),
        ("?marker=nope", "marker [nope] not found"),
        ("?limit=-1", "limit param must be positive"),
        ("?limit=x", "limit param must be an integer"),
        ("?is_public=maybe", "Invalid is_public filter [maybe]"),
    ]:
        resp = api.call("GET", f"/flavors{query}")
        assert resp.status_code == 400, query
        assert message(resp) == text
    api.ok(
        "POST",
        "/flavors",
        body={
            "flavor": {
                "name": "hidden",
                "id": "9",
                "ram": 1,
                "vcpus": 1,
                "disk": 0,
                "os-flavor-access:is_public": False,
            }
        },
    )
    assert ids("") == ["1", "2"]
    assert ids("?is_public=false") == ["9"]
    assert ids("?is_public=none") == ["1", "2", "9"]
    assert ids("?is_public=none", token=MEMBER) == ["1", "2"]


def test_flavor_extra_specs(api: Api) -> None:
    specs = {"extra_specs": {"hw:cpu_policy": "shared", "hw:numa_nodes": 1}}
    created = api.ok("POST", "/flavors/1/os-extra_specs", body=specs)
    assert created == {"extra_specs": {"hw:cpu_policy": "shared", "hw:numa_nodes": "1"}}
    assert api.ok("GET", "/flavors/1/os-extra_specs", token=MEMBER) == created
    assert api.ok("GET", "/flavors/1/os-extra_specs/hw:numa_nodes") == {"hw:numa_nodes": "1"}
    updated = api.ok("PUT", "/flavors/1/os-extra_specs/hw:numa_nodes", body={"hw:numa_nodes": "2"})
    assert updated == {"hw:numa_nodes": "2"}
    shown = api.ok("GET", "/flavors/1", version="2.61")["flavor"]["extra_specs"]
    assert shown == {"hw:cpu_policy": "shared", "hw:numa_nodes": "2"}
    mismatch = api.call("PUT", "/flavors/1/os-extra_specs/a", body={"b": "1"})
    assert (mismatch.status_code, message(mismatch)) == (400, "Request body and URI mismatch")
    many = api.call("PUT", "/flavors/1/os-extra_specs/a", body={"a": "1", "b": "2"})
    assert (many.status_code, message(many)) == (400, "Request body contains too many items")
    assert api.call("DELETE", "/flavors/1/os-extra_specs/hw:numa_nodes").status_code == 200
    missing = api.call("GET", "/flavors/1/os-extra_specs/hw:numa_nodes")
    assert missing.status_code == 404
    assert message(missing) == "Flavor 1 has no extra specs with key hw:numa_nodes."
    assert_forbidden(
        api.call("POST", "/flavors/1/os-extra_specs", token=MEMBER, body=specs),
        "os_compute_api:os-flavor-extra-specs:create",
    )
    bad_key = api.call("POST", "/flavors/1/os-extra_specs", body={"extra_specs": {"a!b": "1"}})
    assert bad_key.status_code == 400
    assert api.call("GET", "/flavors/404/os-extra_specs").status_code == 404


# --- aggregates -------------------------------------------------------------------------------


def test_aggregate_lifecycle_matches_the_v241_samples(api: Api) -> None:
    v = "2.41"
    created = api.ok(
        "POST",
        "/os-aggregates",
        version=v,
        body=sample("os-aggregates/v2.41/aggregate-post-req.json"),
    )
    assert_shape(created, sample("os-aggregates/v2.41/aggregate-post-resp.json"))
    agg_id = created["aggregate"]["id"]
    assert created["aggregate"]["availability_zone"] == "nova"

    shown = api.ok("GET", f"/os-aggregates/{agg_id}", version=v)
    assert_shape(shown, sample("os-aggregates/v2.41/aggregates-get-resp.json"))

    added = api.ok(
        "POST", f"/os-aggregates/{agg_id}/action", version=v, body={"add_host": {"host": "host1"}}
    )
    assert_shape(added, sample("os-aggregates/v2.41/aggregates-add-host-post-resp.json"))
    assert added["aggregate"]["hosts"] == ["host1"]

    listed = api.ok("GET", "/os-aggregates", version=v)
    assert_shape(listed, sample("os-aggregates/v2.41/aggregates-list-get-resp.json"))

    meta = api.ok(
        "POST",
        f"/os-aggregates/{agg_id}/action",
        version=v,
        body=sample("os-aggregates/v2.41/aggregate-metadata-post-req.json"),
    )
    assert_shape(meta, sample("os-aggregates/v2.41/aggregates-metadata-post-resp.json"))
    assert meta["aggregate"]["metadata"] == {"availability_zone": "nova", "key": "value"}

    updated = api.ok(
        "PUT",
        f"/os-aggregates/{agg_id}",
        version=v,
        body=sample("os-aggregates/v2.41/aggregate-update-post-req.json"),
    )
    assert_shape(updated, sample("os-aggregates/v2.41/aggregate-update-post-resp.json"))
    assert updated["aggregate"]["availability_zone"] == "nova2"
    assert updated["aggregate"]["name"] == "newname"

    removed = api.ok(
        "POST",
        f"/os-aggregates/{agg_id}/action",
        version=v,
        body={"remove_host": {"host": "host1"}},
    )
    assert_shape(removed, sample("os-aggregates/v2.41/aggregates-remove-host-post-resp.json"))
    assert removed["aggregate"]["hosts"] == []
    assert api.call("DELETE", f"/os-aggregates/{agg_id}").status_code == 200
    assert api.call("GET", f"/os-aggregates/{agg_id}").status_code == 404


def test_aggregate_without_uuid_before_241(api: Api) -> None:
    created = api.ok("POST", "/os-aggregates", body={"aggregate": {"name": "a"}})
    shown = api.ok("GET", f"/os-aggregates/{created['aggregate']['id']}")
    assert_shape(shown, sample("os-aggregates/aggregates-get-resp.json"))
    assert shown["aggregate"]["availability_zone"] is None


def test_aggregate_host_rules(api: Api) -> None:
    az1 = api.ok(
        "POST", "/os-aggregates", body={"aggregate": {"name": "a1", "availability_zone": "az1"}}
    )
    az2 = api.ok(
        "POST", "/os-aggregates", body={"aggregate": {"name": "a2", "availability_zone": "az2"}}
    )
    plain = api.ok("POST", "/os-aggregates", body={"aggregate": {"name": "ssd"}})
    a1, a2, ssd = (x["aggregate"]["id"] for x in (az1, az2, plain))

    def act(agg: int, body: dict) -> Any:
        return api.call("POST", f"/os-aggregates/{agg}/action", body=body)

    unknown = act(a1, {"add_host": {"host": "nohost"}})
    assert (unknown.status_code, message(unknown)) == (
        404,
        "Compute host nohost could not be found.",
    )
    assert act(a1, {"add_host": {"host": "host1"}}).status_code == 200
    again = act(a1, {"add_host": {"host": "host1"}})
    assert (again.status_code, message(again)) == (409, f"Aggregate {a1} already has host host1.")
    clash = act(a2, {"add_host": {"host": "host1"}})
    assert clash.status_code == 409
    assert "already in availability zone(s) az1" in message(clash)
    assert act(ssd, {"add_host": {"host": "host1"}}).status_code == 200
    # giving the zone-less aggregate a different zone would put host1 in two zones
    meta = act(ssd, {"set_metadata": {"metadata": {"availability_zone": "az2"}}})
    assert meta.status_code == 400
    assert "az1" in message(meta)
    update = api.call(
        "PUT", f"/os-aggregates/{ssd}", body={"aggregate": {"availability_zone": "az2"}}
    )
    assert update.status_code == 400
    assert act(ssd, {"set_metadata": {"metadata": {"availability_zone": "az1"}}}).status_code == 200
    not_member = act(a2, {"remove_host": {"host": "host1"}})
    assert (not_member.status_code, message(not_member)) == (
        404,
        f"Aggregate {a2} has no host host1.",
    )
    in_use = api.call("DELETE", f"/os-aggregates/{a1}")
    assert in_use.status_code == 400
    assert "not empty" in message(in_use)
    dup = api.call("POST", "/os-aggregates", body={"aggregate": {"name": "a1"}})
    assert (dup.status_code, message(dup)) == (409, "Aggregate a1 already exists.")
    assert api.call("GET", "/os-aggregates/abc").status_code == 400
    assert api.call("GET", "/os-aggregates/999").status_code == 404
    assert act(a1, {"frobnicate": {}}).status_code == 400
    assert act(a1, {"add_host": {}, "remove_host": {}}).status_code == 400
    assert (
        api.call(
            "POST", "/os-aggregates", body={"aggregate": {"name": "z", "availability_zone": "a:b"}}
        ).status_code
        == 400
    )
    for method, path in [
        ("GET", "/os-aggregates"),
        ("POST", "/os-aggregates"),
        ("GET", f"/os-aggregates/{a1}"),
    ]:
        assert_forbidden(api.call(method, path, token=MEMBER, body={"aggregate": {"name": "m"}}))


def test_aggregate_image_cache_request(api: Api) -> None:
    agg = api.ok("POST", "/os-aggregates", body={"aggregate": {"name": "a"}})["aggregate"]["id"]
    body = {"cache": [{"id": api.image_id}]}
    assert (
        api.call("POST", f"/os-aggregates/{agg}/images", version="2.80", body=body).status_code
        == 404
    )
    assert (
        api.call("POST", f"/os-aggregates/{agg}/images", version="2.81", body=body).status_code
        == 202
    )
    missing = {"cache": [{"id": new_uuid()}]}
    assert (
        api.call("POST", f"/os-aggregates/{agg}/images", version="2.81", body=missing).status_code
        == 400
    )


# --- availability zones -------------------------------------------------------------------------


def test_availability_zone_list_matches_the_sample(api: Api) -> None:
    body = api.ok("GET", "/os-availability-zone", token=MEMBER)
    assert_shape(body, sample("os-availability-zone/availability-zone-list-resp.json"))
    assert [z["zoneName"] for z in body["availabilityZoneInfo"]] == ["nova"]
    agg = api.ok(
        "POST", "/os-aggregates", body={"aggregate": {"name": "a", "availability_zone": "az1"}}
    )
    api.ok(
        "POST",
        f"/os-aggregates/{agg['aggregate']['id']}/action",
        body={"add_host": {"host": "host1"}},
    )
    zones = api.ok("GET", "/os-availability-zone", token=MEMBER)["availabilityZoneInfo"]
    assert {z["zoneName"]: z["zoneState"]["available"] for z in zones} == {
        "az1": True,
        "nova": True,
    }


def test_availability_zone_detail_matches_the_sample(api: Api) -> None:
    body = api.ok("GET", "/os-availability-zone/detail")
    assert_shape(body, sample("os-availability-zone/availability-zone-detail-resp.json"))
    zones = {z["zoneName"]: z for z in body["availabilityZoneInfo"]}
    assert set(zones) == {"internal", "nova"}
    assert set(zones["nova"]["hosts"]) == {"host1", "host2", "host3", "host4"}
    compute = zones["nova"]["hosts"]["host1"]["nova-compute"]
    assert set(compute) == {"available", "active", "updated_at"}
    assert compute["available"] is True and compute["active"] is True
    assert "nova-conductor" in zones["internal"]["hosts"]["controller"]
    assert_forbidden(
        api.call("GET", "/os-availability-zone/detail", token=MEMBER),
        "os_compute_api:os-availability-zone:detail",
    )


def test_zone_with_every_service_disabled_is_unavailable(api: Api) -> None:
    agg = api.ok(
        "POST", "/os-aggregates", body={"aggregate": {"name": "a", "availability_zone": "dark"}}
    )
    api.ok(
        "POST",
        f"/os-aggregates/{agg['aggregate']['id']}/action",
        body={"add_host": {"host": "host4"}},
    )
    for service in api.ok("GET", "/os-services?host=host4", version="2.53")["services"]:
        api.ok("PUT", f"/os-services/{service['id']}", version="2.53", body={"status": "disabled"})
    zones = api.ok("GET", "/os-availability-zone")["availabilityZoneInfo"]
    assert {z["zoneName"]: z["zoneState"]["available"] for z in zones} == {
        "dark": False,
        "nova": True,
    }


# --- services -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "folder"), [("2.1", ""), ("2.11", "v2.11/"), ("2.53", "v2.53/")]
)
def test_service_list_matches_the_samples(api: Api, version: str, folder: str) -> None:
    body = api.ok("GET", "/os-services", version=version)
    assert_shape(body, sample(f"os-services/{folder}services-list-get-resp.json"))
    by_host = {(s["host"], s["binary"]): s for s in body["services"]}
    assert set(by_host) == {
        ("host1", "nova-compute"),
        ("host2", "nova-compute"),
        ("host3", "nova-compute"),
        ("host4", "nova-compute"),
        ("controller", "nova-conductor"),
    }
    assert by_host[("host1", "nova-compute")]["zone"] == "nova"
    assert by_host[("controller", "nova-conductor")]["zone"] == "internal"
    assert by_host[("host1", "nova-compute")]["state"] == "up"
    id_kind = str if version >= "2.53" else int
    assert all(isinstance(s["id"], id_kind) for s in body["services"])


def test_service_list_filters(api: Api) -> None:
    hosts = [s["host"] for s in api.ok("GET", "/os-services?host=host3")["services"]]
    assert hosts == ["host3"]
    binaries = {
        s["binary"] for s in api.ok("GET", "/os-services?binary=nova-conductor")["services"]
    }
    assert binaries == {"nova-conductor"}
    assert_forbidden(
        api.call("GET", "/os-services", token=MEMBER), "os_compute_api:os-services:list"
    )


def test_service_update_253_matches_the_samples(api: Api) -> None:
    v = "2.53"
    host1 = api.ok("GET", "/os-services?host=host1", version=v)["services"][0]["id"]
    resp = api.ok(
        "PUT",
        f"/os-services/{host1}",
        version=v,
        body=sample("os-services/v2.53/service-disable-log-put-req.json"),
    )
    assert_shape(resp, sample("os-services/v2.53/service-disable-log-put-resp.json"))
    assert (resp["service"]["status"], resp["service"]["disabled_reason"]) == (
        "disabled",
        "maintenance",
    )
    resp = api.ok("PUT", f"/os-services/{host1}", version=v, body={"status": "enabled"})
    assert_shape(resp, sample("os-services/v2.53/service-enable-put-resp.json"))
    assert (resp["service"]["status"], resp["service"]["disabled_reason"]) == ("enabled", None)
    resp = api.ok("PUT", f"/os-services/{host1}", version=v, body={"forced_down": True})
    assert_shape(resp, sample("os-services/v2.53/service-force-down-put-resp.json"))
    assert (resp["service"]["state"], resp["service"]["forced_down"]) == ("down", True)
    hyp = api.ok("GET", "/os-hypervisors?hypervisor_hostname_pattern=host1", version=v)
    assert hyp["hypervisors"][0]["state"] == "down"


def test_service_update_rejects_bad_requests(api: Api) -> None:
    v = "2.53"
    services = api.ok("GET", "/os-services", version=v)["services"]
    compute = next(s["id"] for s in services if s["binary"] == "nova-compute")
    conductor = next(s["id"] for s in services if s["binary"] == "nova-conductor")
    cases = [
        (compute, {"status": "enabled", "disabled_reason": "x"}, 400),
        (compute, {"disabled_reason": "x"}, 400),
        (compute, {}, 400),
        (compute, {"status": "sleeping"}, 400),
        (compute, {"forced_down": "maybe"}, 400),
        ("not-a-uuid", {"status": "enabled"}, 400),
        (new_uuid(), {"status": "enabled"}, 404),
        (conductor, {"status": "disabled"}, 400),
    ]
    for service_id, body, status in cases:
        resp = api.call("PUT", f"/os-services/{service_id}", version=v, body=body)
        assert resp.status_code == status, (body, resp.text)
    resp = api.call("PUT", f"/os-services/{conductor}", version=v, body={"status": "disabled"})
    assert "Only nova-compute services can be updated" in message(resp)
    assert_forbidden(
        api.call(
            "PUT", f"/os-services/{compute}", version=v, token=MEMBER, body={"status": "disabled"}
        )
    )


def test_legacy_service_actions_match_the_samples(api: Api) -> None:
    for action, folder, version in [
        ("disable", "", "2.1"),
        ("enable", "", "2.1"),
        ("disable-log-reason", "", "2.1"),
        ("force-down", "v2.11/", "2.11"),
    ]:
        name = "disable-log" if action == "disable-log-reason" else action
        request = sample(f"os-services/{folder}service-{name}-put-req.json")
        request["host"] = "host2"
        resp = api.ok("PUT", f"/os-services/{action}", version=version, body=request)
        assert_shape(resp, sample(f"os-services/{folder}service-{name}-put-resp.json"))
        assert resp["service"]["host"] == "host2"
    state = api.ok("GET", "/os-services?host=host2", version="2.11")["services"][0]
    assert (state["status"], state["forced_down"], state["state"]) == ("disabled", True, "down")
    assert (
        api.call(
            "PUT",
            "/os-services/force-down",
            version="2.10",
            body={"host": "host2", "binary": "nova-compute", "forced_down": True},
        ).status_code
        == 404
    )
    unmapped = api.call(
        "PUT", "/os-services/enable", body={"host": "nohost", "binary": "nova-compute"}
    )
    assert unmapped.status_code == 404
    # from 2.53 the path segment is a service uuid
    assert (
        api.call(
            "PUT",
            "/os-services/enable",
            version="2.53",
            body={"host": "host2", "binary": "nova-compute"},
        ).status_code
        == 400
    )


def test_down_cell_services_are_unknown_from_269(api_down: Api) -> None:
    old = api_down.ok("GET", "/os-services", version="2.68")["services"]
    assert "host5" not in {s["host"] for s in old}
    new = api_down.ok("GET", "/os-services", version="2.69")["services"]
    down = [s for s in new if s["host"] == "host5"]
    assert down == [{"binary": "nova-compute", "host": "host5", "status": "UNKNOWN"}]
    assert_shape({"services": down}, sample("os-services/v2.69/services-list-get-resp.json"))


def test_delete_service(api: Api) -> None:
    with session_scope(api.cell_db("cell1")) as s:
        s.add(_instance("demo", "host1", 1, 512))
    services = {s["host"]: s for s in api.ok("GET", "/os-services", version="2.53")["services"]}
    busy = api.call("DELETE", f"/os-services/{services['host1']['id']}", version="2.53")
    assert busy.status_code == 409
    assert "hosting instances" in message(busy)
    assert (
        api.call("DELETE", f"/os-services/{services['host2']['id']}", version="2.53").status_code
        == 204
    )
    assert "host2" not in {s["host"] for s in api.ok("GET", "/os-services")["services"]}
    hyps = api.ok("GET", "/os-hypervisors", version="2.53")["hypervisors"]
    assert "host2" not in {h["hypervisor_hostname"] for h in hyps}
    with session_scope(api.runtime.settings.api_db) as s:
        assert s.scalar(select(HostMapping).where(HostMapping.host == "host2")) is None
    assert api.call("DELETE", f"/os-services/{new_uuid()}", version="2.53").status_code == 404
    assert api.call("DELETE", "/os-services/abc", version="2.53").status_code == 400


# --- hypervisors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "folder"),
    [("2.1", ""), ("2.28", "v2.28/"), ("2.53", "v2.53/"), ("2.88", "v2.88/")],
)
def test_hypervisor_views_match_the_samples(api: Api, version: str, folder: str) -> None:
    links = frozenset({"hypervisors_links"})
    listed = api.ok("GET", "/os-hypervisors", version=version)
    assert_shape(
        listed, sample(f"os-hypervisors/{folder}hypervisors-list-resp.json"), optional=links
    )
    detail = api.ok("GET", "/os-hypervisors/detail", version=version)
    assert_shape(
        detail, sample(f"os-hypervisors/{folder}hypervisors-detail-resp.json"), optional=links
    )
    assert len(detail["hypervisors"]) == 4
    first = listed["hypervisors"][0]["id"]
    shown = api.ok("GET", f"/os-hypervisors/{first}", version=version)
    assert_shape(shown, sample(f"os-hypervisors/{folder}hypervisors-show-resp.json"))
    hyp = shown["hypervisor"]
    assert (hyp["state"], hyp["status"]) == ("up", "enabled")
    if version < "2.88":
        assert (hyp["memory_mb"], hyp["memory_mb_used"], hyp["free_ram_mb"]) == (32768, 512, 32256)
        assert (hyp["local_gb"], hyp["free_disk_gb"]) == (400, 390)


def test_hypervisor_paging_from_233(api: Api) -> None:
    page = api.ok("GET", "/os-hypervisors?limit=1", version="2.33")
    assert_shape(page, sample("os-hypervisors/v2.33/hypervisors-list-resp.json"))
    marker = page["hypervisors"][0]["id"]
    assert page["hypervisors_links"][0]["href"] == (
        f"http://testserver/v2.1/os-hypervisors?limit=1&marker={marker}"
    )
    page = api.ok("GET", "/os-hypervisors/detail?limit=2", version="2.53")
    assert_shape(page, sample("os-hypervisors/v2.53/hypervisors-detail-resp.json"))
    rest = api.ok(
        "GET", f"/os-hypervisors/detail?marker={page['hypervisors'][-1]['id']}", version="2.53"
    )
    assert len(page["hypervisors"]) + len(rest["hypervisors"]) == 4
    assert api.call("GET", "/os-hypervisors?marker=nope", version="2.53").status_code == 400
    assert (
        api.call("GET", f"/os-hypervisors?marker={new_uuid()}", version="2.53").status_code == 400
    )


def test_hypervisor_servers_and_pattern(api: Api) -> None:
    with session_scope(api.cell_db("cell1")) as s:
        s.add(_instance("demo", "host1", 1, 512, uuid="aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"))
    body = api.ok(
        "GET", "/os-hypervisors?with_servers=true&hypervisor_hostname_pattern=host1", version="2.53"
    )
    assert_shape(body, sample("os-hypervisors/v2.53/hypervisors-with-servers-resp.json"))
    assert body["hypervisors"][0]["servers"][0]["uuid"] == "aaaaaaaa-aaaa-aaaa-aaaa-aaaaaaaaaaaa"
    host1 = body["hypervisors"][0]["id"]
    shown = api.ok("GET", f"/os-hypervisors/{host1}?with_servers=1", version="2.53")
    assert_shape(shown, sample("os-hypervisors/v2.53/hypervisors-show-with-servers-resp.json"))
    detail = api.ok("GET", "/os-hypervisors/detail?with_servers=true", version="2.88")
    assert_shape(detail, sample("os-hypervisors/v2.88/hypervisors-detail-with-servers-resp.json"))
    # before 2.75 an empty server list is left out, from 2.75 it is always there
    empty = api.ok(
        "GET", "/os-hypervisors?with_servers=true&hypervisor_hostname_pattern=host2", version="2.53"
    )
    assert "servers" not in empty["hypervisors"][0]
    empty = api.ok(
        "GET", "/os-hypervisors?with_servers=true&hypervisor_hostname_pattern=host2", version="2.75"
    )
    assert empty["hypervisors"][0]["servers"] == []
    nothing = api.call("GET", "/os-hypervisors?hypervisor_hostname_pattern=zzz", version="2.53")
    assert (nothing.status_code, message(nothing)) == (
        404,
        "No hypervisor matching 'zzz' could be found.",
    )
    paging = api.call(
        "GET", "/os-hypervisors?hypervisor_hostname_pattern=host&limit=1", version="2.53"
    )
    assert paging.status_code == 400
    assert (
        api.call("GET", "/os-hypervisors?with_servers=perhaps", version="2.53").status_code == 400
    )
    # the pre-2.53 search and servers paths
    search = api.ok("GET", "/os-hypervisors/host1/search")
    assert_shape(search, sample("os-hypervisors/hypervisors-search-resp.json"))
    servers = api.ok("GET", "/os-hypervisors/host1/servers")
    assert_shape(servers, sample("os-hypervisors/hypervisors-with-servers-resp.json"))
    assert api.call("GET", "/os-hypervisors/host1/search", version="2.53").status_code in (400, 404)
    assert api.call("GET", "/os-hypervisors/zzz/search").status_code == 404


def test_hypervisor_statistics_and_uptime(api: Api) -> None:
    stats = api.ok("GET", "/os-hypervisors/statistics")
    assert_shape(stats, sample("os-hypervisors/v2.53/hypervisors-statistics-resp.json"))
    assert stats["hypervisor_statistics"]["count"] == 4
    assert stats["hypervisor_statistics"]["memory_mb"] == 4 * 32768
    assert api.call("GET", "/os-hypervisors/statistics", version="2.88").status_code == 404
    hyp = api.ok("GET", "/os-hypervisors", version="2.53")["hypervisors"][0]["id"]
    uptime = api.ok("GET", f"/os-hypervisors/{hyp}/uptime", version="2.53")
    assert_shape(uptime, sample("os-hypervisors/v2.53/hypervisors-uptime-resp.json"))
    assert " up " in uptime["hypervisor"]["uptime"]
    assert api.call("GET", f"/os-hypervisors/{hyp}/uptime", version="2.88").status_code == 404


def test_hypervisor_errors_and_policy(api: Api) -> None:
    assert api.call("GET", "/os-hypervisors/not-a-uuid", version="2.53").status_code == 400
    assert api.call("GET", f"/os-hypervisors/{new_uuid()}", version="2.53").status_code == 404
    assert api.call("GET", "/os-hypervisors/abc").status_code == 404
    assert api.call("GET", "/os-hypervisors/9999").status_code == 404
    assert_forbidden(
        api.call("GET", "/os-hypervisors", token=MEMBER), "os_compute_api:os-hypervisors:list"
    )
    assert_forbidden(api.call("GET", "/os-hypervisors/detail", token=MEMBER))


# --- keypairs -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "folder", "status"),
    [("2.1", "", 200), ("2.2", "v2.2/", 201), ("2.92", "v2.92/", 201)],
)
def test_keypair_import_matches_the_samples(
    api: Api, version: str, folder: str, status: int
) -> None:
    request = sample(f"os-keypairs/{folder}keypairs-import-post-req.json")
    request["keypair"].pop("user_id", None)
    body = api.ok("POST", "/os-keypairs", status, version=version, token=MEMBER, body=request)
    assert_shape(body, sample(f"os-keypairs/{folder}keypairs-import-post-resp.json"))
    assert body["keypair"]["fingerprint"] == SSH_FINGERPRINT
    assert body["keypair"]["user_id"] == "alice"


@pytest.mark.parametrize(("version", "folder", "status"), [("2.1", "", 200), ("2.2", "v2.2/", 201)])
def test_keypair_generation_matches_the_samples(
    api: Api, version: str, folder: str, status: int
) -> None:
    request = sample(f"os-keypairs/{folder}keypairs-post-req.json")
    body = api.ok("POST", "/os-keypairs", status, version=version, token=MEMBER, body=request)
    assert_shape(body, sample(f"os-keypairs/{folder}keypairs-post-resp.json"))
    assert body["keypair"]["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert body["keypair"]["public_key"].startswith("ssh-rsa ")


def test_keypair_generation_is_gone_at_292(api: Api) -> None:
    resp = api.call("POST", "/os-keypairs", version="2.92", body={"keypair": {"name": "k"}})
    assert resp.status_code == 400
    assert "public_key" in message(resp)


def test_keypair_list_show_delete(api: Api) -> None:
    for name in ("k1", "k2", "k3"):
        api.ok(
            "POST",
            "/os-keypairs",
            201,
            version="2.2",
            token=MEMBER,
            body={"keypair": {"name": name, "public_key": SSH_KEY}},
        )
    listed = api.ok("GET", "/os-keypairs", version="2.2", token=MEMBER)
    assert_shape(listed, sample("os-keypairs/v2.2/keypairs-list-resp.json"))
    assert [k["keypair"]["name"] for k in listed["keypairs"]] == ["k1", "k2", "k3"]
    page = api.ok("GET", "/os-keypairs?limit=2", version="2.35", token=MEMBER)
    assert_shape(page, sample("os-keypairs/v2.35/keypairs-list-resp.json"))
    assert page["keypairs_links"][0]["href"].endswith("/v2.1/os-keypairs?limit=2&marker=k2")
    rest = api.ok("GET", "/os-keypairs?marker=k2", version="2.35", token=MEMBER)
    assert [k["keypair"]["name"] for k in rest["keypairs"]] == ["k3"]
    shown = api.ok("GET", "/os-keypairs/k1", version="2.10", token=MEMBER)
    assert_shape(shown, sample("os-keypairs/v2.10/keypairs-get-resp.json"))
    assert_shape(
        api.ok("GET", "/os-keypairs/k1", token=MEMBER), sample("os-keypairs/keypairs-get-resp.json")
    )
    # another user sees none of them
    assert api.ok("GET", "/os-keypairs", token=OTHER)["keypairs"] == []
    missing = api.call("GET", "/os-keypairs/k1", token=OTHER)
    assert (missing.status_code, message(missing)) == (404, "Keypair k1 not found for user mallory")
    assert api.call("DELETE", "/os-keypairs/k1", token=MEMBER).status_code == 202
    assert api.call("DELETE", "/os-keypairs/k2", version="2.2", token=MEMBER).status_code == 204
    assert api.call("DELETE", "/os-keypairs/k2", version="2.2", token=MEMBER).status_code == 404


def test_keypair_admin_acts_for_other_users_from_210(api: Api) -> None:
    body = {"keypair": {"name": "theirs", "public_key": SSH_KEY, "user_id": "alice"}}
    created = api.ok("POST", "/os-keypairs", 201, version="2.10", body=body)
    assert created["keypair"]["user_id"] == "alice"
    assert api.ok("GET", "/os-keypairs/theirs", token=MEMBER)["keypair"]["user_id"] == "alice"
    assert (
        api.ok("GET", "/os-keypairs/theirs?user_id=alice", version="2.10")["keypair"]["name"]
        == "theirs"
    )
    assert api.call("POST", "/os-keypairs", version="2.9", body=body).status_code == 400
    assert_forbidden(
        api.call("GET", "/os-keypairs?user_id=alice", version="2.10", token=OTHER),
        "os_compute_api:os-keypairs:index",
    )
    assert_forbidden(api.call("POST", "/os-keypairs", version="2.10", token=OTHER, body=body))


def test_keypair_bad_input(api: Api) -> None:
    cases = [
        ("2.1", {"keypair": {"name": "bad@name", "public_key": SSH_KEY}}, 400),
        ("2.92", {"keypair": {"name": "fine@name.", "public_key": SSH_KEY}}, 201),
        ("2.2", {"keypair": {"name": "k", "public_key": "ssh-rsa notbase64!"}}, 400),
        ("2.2", {"keypair": {"name": "k", "public_key": "ssh-dss " + SSH_KEY.split()[1]}}, 400),
        ("2.2", {"keypair": {"name": "k", "public_key": SSH_KEY, "type": "pgp"}}, 400),
        ("2.2", {"keypair": {"name": "", "public_key": SSH_KEY}}, 400),
        ("2.2", {"keypair": {"name": "k", "public_key": "garbage", "type": "x509"}}, 400),
        ("2.1", {"keypair": {"name": "k", "public_key": SSH_KEY, "type": "ssh"}}, 400),
    ]
    for version, body, status in cases:
        resp = api.call("POST", "/os-keypairs", version=version, body=body)
        assert resp.status_code == status, (body, resp.text)
    api.ok(
        "POST",
        "/os-keypairs",
        201,
        version="2.2",
        body={"keypair": {"name": "k", "public_key": SSH_KEY}},
    )
    dup = api.call(
        "POST",
        "/os-keypairs",
        version="2.2",
        body={"keypair": {"name": "k", "public_key": SSH_KEY}},
    )
    assert (dup.status_code, message(dup)) == (409, "Key pair 'k' already exists.")


def test_keypair_quota(api: Api) -> None:
    api.ok("PUT", "/os-quota-sets/demo", body={"quota_set": {"key_pairs": 1}})
    api.ok(
        "POST",
        "/os-keypairs",
        201,
        version="2.2",
        token=MEMBER,
        body={"keypair": {"name": "a", "public_key": SSH_KEY}},
    )
    over = api.call(
        "POST",
        "/os-keypairs",
        version="2.2",
        token=MEMBER,
        body={"keypair": {"name": "b", "public_key": SSH_KEY}},
    )
    assert (over.status_code, message(over)) == (403, "Quota exceeded, too many key pairs.")


# --- quotas and limits --------------------------------------------------------------------------


def _seed_usage(api: Api) -> None:
    """demo: 2 live servers in cell1 (3 cores, 1536 MB), one building (1 core, 256 MB)."""
    cell1 = api.cell_ids["cell1"]
    live = [_instance("demo", "host1", 1, 512), _instance("demo", "host2", 2, 1024)]
    ignored = [
        _instance("demo", "host1", 8, 8192, hidden=True),
        _instance("demo", "host1", 8, 8192, deleted=1),
        _instance("other", "host1", 8, 8192),
    ]
    with session_scope(api.cell_db("cell1")) as s:
        s.add_all(live + ignored)
    building = new_uuid()
    with session_scope(api.runtime.settings.api_db) as s:
        for inst in live:
            s.add(
                InstanceMapping(
                    instance_uuid=inst.uuid, cell_id=cell1, project_id="demo", user_id="alice"
                )
            )
        s.add(
            InstanceMapping(
                instance_uuid=building, cell_id=None, project_id="demo", user_id="alice"
            )
        )
        s.add(
            InstanceMapping(
                instance_uuid=new_uuid(),
                cell_id=cell1,
                project_id="demo",
                user_id="alice",
                queued_for_delete=True,
            )
        )
        s.add(
            BuildRequest(
                instance_uuid=building,
                project_id="demo",
                instance={"flavor": {"vcpus": 1, "memory_mb": 256}},
            )
        )
        s.add(InstanceGroup(name="g", policy="affinity", user_id="alice", project_id="demo"))


def test_quota_usage_counts_every_cell_and_build_requests(api: Api) -> None:
    _seed_usage(api)
    usage = QuotaEngine(api.runtime).usage("demo", user_id="alice")
    assert usage == {"instances": 3, "cores": 4, "ram": 1792, "key_pairs": 0, "server_groups": 1}


def test_quota_check_deltas_message(api: Api) -> None:
    _seed_usage(api)
    engine = QuotaEngine(api.runtime)
    engine.check_deltas("demo", {"instances": 1, "cores": 16, "ram": 512})
    engine.set_limits("demo", {"cores": 4})
    with pytest.raises(QuotaExceeded) as err:
        engine.check_deltas("demo", {"instances": 1, "cores": 2, "ram": 512})
    assert err.value.code == 403
    assert (
        err.value.message == "Quota exceeded for cores: Requested 2, but already used 4 of 4 cores"
    )
    engine.set_limits("demo", {"ram": 2000})
    with pytest.raises(QuotaExceeded) as err:
        engine.check_deltas("demo", {"cores": 1, "ram": 512})
    assert err.value.message == (
        "Quota exceeded for cores, ram: Requested 1, 512, but already used 4, 1792 of "
        "4, 2000 cores, ram"
    )
    engine.set_limits("demo", {"cores": -1, "ram": -1})
    engine.check_deltas("demo", {"cores": 1000, "ram": 10**6})


def test_quota_usage_skips_a_down_cell(api_down: Api) -> None:
    _seed_usage(api_down)
    usage = QuotaEngine(api_down.runtime).usage("demo")
    assert (usage["cores"], usage["ram"]) == (4, 1792)
    assert api_down.call("GET", "/limits", token=MEMBER).status_code == 200


@pytest.mark.parametrize(
    ("version", "folder"), [("2.1", ""), ("2.36", "v2.36/"), ("2.39", "v2.39/"), ("2.57", "v2.57/")]
)
def test_limits_match_the_samples(api: Api, version: str, folder: str) -> None:
    _seed_usage(api)
    body = api.ok("GET", "/limits", version=version, token=MEMBER)
    assert_shape(body, sample(f"limits/{folder}limit-get-resp.json"))
    absolute = body["limits"]["absolute"]
    assert (
        absolute["totalInstancesUsed"],
        absolute["totalCoresUsed"],
        absolute["totalRAMUsed"],
    ) == (3, 4, 1792)
    assert (absolute["maxTotalInstances"], absolute["maxTotalCores"]) == (10, 20)
    assert absolute["totalServerGroupsUsed"] == 1


def test_limits_of_another_project(api: Api) -> None:
    _seed_usage(api)
    body = api.ok("GET", "/limits?tenant_id=demo")
    assert body["limits"]["absolute"]["totalCoresUsed"] == 4
    assert_forbidden(
        api.call("GET", "/limits?tenant_id=admin", token=MEMBER),
        "os_compute_api:limits:other_project",
    )


@pytest.mark.parametrize(
    ("version", "folder"), [("2.1", ""), ("2.36", "v2.36/"), ("2.57", "v2.57/")]
)
def test_quota_set_views_match_the_samples(api: Api, version: str, folder: str) -> None:
    _seed_usage(api)
    shown = api.ok("GET", "/os-quota-sets/demo", version=version, token=MEMBER)
    assert_shape(shown, sample(f"os-quota-sets/{folder}quotas-show-get-resp.json"))
    assert shown["quota_set"]["id"] == "demo"
    defaults = api.ok("GET", "/os-quota-sets/demo/defaults", version=version, token=MEMBER)
    assert_shape(defaults, sample(f"os-quota-sets/{folder}quotas-show-defaults-get-resp.json"))
    detail = api.ok("GET", "/os-quota-sets/demo/detail", version=version, token=MEMBER)
    assert_shape(detail, sample(f"os-quota-sets/{folder}quotas-show-detail-get-resp.json"))
    assert detail["quota_set"]["cores"] == {"in_use": 4, "limit": 20, "reserved": 0}
    updated = api.ok(
        "PUT",
        "/os-quota-sets/demo",
        version=version,
        body=sample(f"os-quota-sets/{folder}quotas-update-post-req.json"),
    )
    assert_shape(updated, sample(f"os-quota-sets/{folder}quotas-update-post-resp.json"))


def test_quota_set_update_rules(api: Api) -> None:
    _seed_usage(api)
    below = api.call("PUT", "/os-quota-sets/demo", body={"quota_set": {"cores": 2}})
    assert below.status_code == 400
    assert message(below) == (
        "Quota limit 2 for cores must be greater than or equal to already used and reserved 4."
    )
    forced = api.ok("PUT", "/os-quota-sets/demo", body={"quota_set": {"cores": 2, "force": "True"}})
    assert forced["quota_set"]["cores"] == 2
    assert api.ok("GET", "/os-quota-sets/demo", token=MEMBER)["quota_set"]["cores"] == 2
    assert api.call("DELETE", "/os-quota-sets/demo").status_code == 202
    assert api.ok("GET", "/os-quota-sets/demo", token=MEMBER)["quota_set"]["cores"] == 20
    for version, body in [
        ("2.57", {"quota_set": {"injected_files": 3}}),
        ("2.36", {"quota_set": {"floating_ips": 3}}),
        ("2.1", {"quota_set": {"cores": -2}}),
        ("2.1", {"quota_set": {"cores": "many"}}),
        ("2.1", {"quota_set": {"widgets": 1}}),
    ]:
        assert api.call("PUT", "/os-quota-sets/demo", version=version, body=body).status_code == 400
    assert (
        api.call(
            "PUT", "/os-quota-sets/demo", version="2.1", body={"quota_set": {"injected_files": 3}}
        ).status_code
        == 200
    )
    assert (
        api.call(
            "PUT", "/os-quota-sets/demo?user_id=alice", body={"quota_set": {"cores": 30}}
        ).status_code
        == 400
    )
    rule = "os_compute_api:os-quota-sets:%s"
    assert_forbidden(
        api.call("PUT", "/os-quota-sets/demo", token=MEMBER, body={"quota_set": {"cores": 99}}),
        rule % "update",
    )
    assert_forbidden(api.call("GET", "/os-quota-sets/evil", token=MEMBER), rule % "show")
    assert_forbidden(api.call("DELETE", "/os-quota-sets/demo", token=MEMBER), rule % "delete")


# --- server groups ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "folder"), [("2.1", ""), ("2.13", "v2.13/"), ("2.64", "v2.64/")]
)
def test_server_groups_match_the_samples(api: Api, version: str, folder: str) -> None:
    request = sample(f"os-server-groups/{folder}server-groups-post-req.json")
    created = api.ok("POST", "/os-server-groups", version=version, token=MEMBER, body=request)
    assert_shape(created, sample(f"os-server-groups/{folder}server-groups-post-resp.json"))
    group_id = created["server_group"]["id"]
    shown = api.ok("GET", f"/os-server-groups/{group_id}", version=version, token=MEMBER)
    assert_shape(shown, sample(f"os-server-groups/{folder}server-groups-get-resp.json"))
    listed = api.ok("GET", "/os-server-groups", version=version, token=MEMBER)
    assert_shape(listed, sample(f"os-server-groups/{folder}server-groups-list-resp.json"))
    assert [g["id"] for g in listed["server_groups"]] == [group_id]
    if version >= "2.64":
        assert shown["server_group"]["rules"] == {"max_server_per_host": 3}
        assert shown["server_group"]["policy"] == "anti-affinity"
    else:
        assert shown["server_group"]["policies"] == ["anti-affinity"]
    assert api.call("DELETE", f"/os-server-groups/{group_id}", token=MEMBER).status_code == 204
    assert api.call("GET", f"/os-server-groups/{group_id}", token=MEMBER).status_code == 404


def test_server_group_members_projects_and_errors(api: Api) -> None:
    mine = api.ok(
        "POST",
        "/os-server-groups",
        version="2.64",
        token=MEMBER,
        body={"server_group": {"name": "a", "policy": "affinity"}},
    )["server_group"]
    theirs = api.ok(
        "POST",
        "/os-server-groups",
        version="2.64",
        token=OTHER,
        body={"server_group": {"name": "b", "policy": "soft-anti-affinity"}},
    )["server_group"]
    member = new_uuid()
    with session_scope(api.runtime.settings.api_db) as s:
        group = s.scalar(select(InstanceGroup).where(InstanceGroup.uuid == mine["id"]))
        s.add(InstanceGroupMember(group_id=group.id, instance_uuid=member))
    assert api.ok("GET", f"/os-server-groups/{mine['id']}", token=MEMBER)["server_group"][
        "members"
    ] == [member]
    assert [g["id"] for g in api.ok("GET", "/os-server-groups", token=MEMBER)["server_groups"]] == [
        mine["id"]
    ]
    assert [
        g["id"]
        for g in api.ok("GET", "/os-server-groups?all_projects=True", token=MEMBER)["server_groups"]
    ] == [mine["id"]]
    everything = api.ok("GET", "/os-server-groups?all_projects=True")["server_groups"]
    assert {g["id"] for g in everything} == {mine["id"], theirs["id"]}
    assert len(api.ok("GET", "/os-server-groups?all_projects=1&limit=1")["server_groups"]) == 1
    assert len(api.ok("GET", "/os-server-groups?all_projects=1&offset=1")["server_groups"]) == 1
    assert api.call("GET", "/os-server-groups?limit=x").status_code == 400
    assert_forbidden(api.call("GET", f"/os-server-groups/{theirs['id']}", token=MEMBER))
    assert_forbidden(api.call("DELETE", f"/os-server-groups/{theirs['id']}", token=MEMBER))
    assert api.call("GET", "/os-server-groups/not-a-uuid").status_code == 404
    for version, body in [
        (
            "2.64",
            {
                "server_group": {
                    "name": "x",
                    "policy": "affinity",
                    "rules": {"max_server_per_host": 2},
                }
            },
        ),
        ("2.64", {"server_group": {"name": "x", "policies": ["affinity"]}}),
        ("2.64", {"server_group": {"name": "x", "policy": "sometimes"}}),
        (
            "2.64",
            {
                "server_group": {
                    "name": "x",
                    "policy": "anti-affinity",
                    "rules": {"max_server_per_host": 0},
                }
            },
        ),
        ("2.14", {"server_group": {"name": "x", "policies": ["soft-affinity"]}}),
        ("2.1", {"server_group": {"name": "x", "policies": ["affinity", "anti-affinity"]}}),
        ("2.1", {"server_group": {"name": "x", "policy": "affinity"}}),
        ("2.1", {"server_group": {"policies": ["affinity"]}}),
    ]:
        resp = api.call("POST", "/os-server-groups", version=version, body=body)
        assert resp.status_code == 400, (version, body, resp.text)
    rules = api.call(
        "POST",
        "/os-server-groups",
        version="2.64",
        body={
            "server_group": {"name": "x", "policy": "affinity", "rules": {"max_server_per_host": 2}}
        },
    )
    assert "Only anti-affinity policy supports rules." in message(rules)
    assert (
        api.call(
            "POST",
            "/os-server-groups",
            version="2.15",
            body={"server_group": {"name": "x", "policies": ["soft-affinity"]}},
        ).status_code
        == 200
    )


def test_server_group_quota(api: Api) -> None:
    api.ok("PUT", "/os-quota-sets/demo", body={"quota_set": {"server_groups": 1}})
    body = {"server_group": {"name": "g", "policies": ["affinity"]}}
    api.ok("POST", "/os-server-groups", token=MEMBER, body=body)
    over = api.call("POST", "/os-server-groups", token=MEMBER, body=body)
    assert (over.status_code, message(over)) == (403, "Quota exceeded, too many server groups.")


# --- images -------------------------------------------------------------------------------------


def test_images_match_the_samples(api: Api) -> None:
    listed = api.ok("GET", "/images", token=MEMBER)
    assert_shape(listed, sample("images/images-list-get-resp.json"))
    assert [i["id"] for i in listed["images"]] == [api.image_id]
    detail = api.ok("GET", "/images/detail", token=MEMBER)
    with_disk_config = [
        i
        for i in sample("images/images-details-get-resp.json")["images"]
        if "OS-DCF:diskConfig" in i
    ]
    assert_shape(detail, {"images": with_disk_config[:1]})
    shown = api.ok("GET", f"/images/{api.image_id}", token=MEMBER)
    assert_shape(shown, sample("images/image-get-resp.json"))
    image = shown["image"]
    assert (image["status"], image["progress"], image["OS-EXT-IMG-SIZE:size"]) == (
        "ACTIVE",
        100,
        4096,
    )
    assert image["metadata"]["architecture"] == "x86_64"
    assert image["OS-DCF:diskConfig"] == "AUTO"


def test_images_filters_visibility_and_version_cap(api: Api) -> None:
    private = api.runtime.images.create("secret", owner="evil", visibility="private")
    assert [i["name"] for i in api.ok("GET", "/images/detail", token=MEMBER)["images"]] == [
        "cirros"
    ]
    assert api.call("GET", f"/images/{private['id']}", token=MEMBER).status_code == 404
    assert api.ok("GET", f"/images/{private['id']}", token=OTHER)["image"]["status"] == "SAVING"
    assert {i["name"] for i in api.ok("GET", "/images")["images"]} == {"cirros", "secret"}
    assert [i["name"] for i in api.ok("GET", "/images?name=secret")["images"]] == ["secret"]
    assert [i["name"] for i in api.ok("GET", "/images?status=ACTIVE")["images"]] == ["cirros"]
    assert api.call("GET", "/images?minRam=x").status_code == 400
    assert api.call("GET", f"/images/{new_uuid()}").status_code == 404
    assert api.call("GET", "/images", version="2.36").status_code == 404
    assert api.call("GET", "/images", version="2.35").status_code == 200


# --- down cells ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/os-services",
        "/os-hypervisors",
        "/os-hypervisors/detail",
        "/os-availability-zone",
        "/os-availability-zone/detail",
        "/limits",
        "/os-quota-sets/admin/detail",
    ],
)
def test_a_down_cell_never_turns_a_listing_into_a_500(api_down: Api, path: str) -> None:
    for version in ("2.1", "2.53", "2.69", "2.100"):
        resp = api_down.call("GET", path, version=version)
        assert resp.status_code == 200, (path, version, resp.text)
