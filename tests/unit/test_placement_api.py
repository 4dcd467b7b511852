"""The placement read API, in OpenStack Placement's shapes, over a tiny FastAPI app."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from atoll.db.session import get_engine
from atoll.placement import AllocationRequest, Inventory, Placement, PlacementBase
from atoll.placement.router import router

FLAVOR = {"VCPU": 2, "MEMORY_MB": 2048, "DISK_GB": 20}


def new_uuid() -> str:
    return str(uuidlib.uuid4())


@pytest.fixture
def placement(tmp_path) -> Iterator[Placement]:
    url = f"sqlite:///{tmp_path}/placement.db"
    PlacementBase.metadata.create_all(get_engine(url))
    yield Placement(url)
    get_engine(url).dispose()


@pytest.fixture
def client(placement: Placement) -> Iterator[TestClient]:
    app = FastAPI()
    app.state.placement = placement
    app.include_router(router, prefix="/placement")
    with TestClient(app) as c:
        yield c


@pytest.fixture
def host(placement: Placement) -> str:
    rp = new_uuid()
    placement.ensure_provider(
        rp,
        "compute-1",
        {
            "VCPU": Inventory(16, reserved=1, allocation_ratio=4.0),
            "MEMORY_MB": Inventory(32768, reserved=512, allocation_ratio=1.5),
            "DISK_GB": Inventory(500),
        },
    )
    return rp


def assert_not_found(response, what: str) -> None:
    assert response.status_code == 404
    body = response.json()
    (error,) = body["errors"]
    assert error["status"] == 404 and error["title"] == "Not Found"
    assert what in error["detail"]


def test_list_resource_providers(client: TestClient, placement: Placement, host: str) -> None:
    other = new_uuid()
    placement.ensure_provider(other, "compute-2", {"VCPU": Inventory(8)})
    response = client.get("/placement/resource_providers")
    assert response.status_code == 200
    providers = response.json()["resource_providers"]
    assert [p["name"] for p in providers] == ["compute-1", "compute-2"]
    first = providers[0]
    assert first["uuid"] == host
    assert first["generation"] == 1
    assert first["parent_provider_uuid"] is None
    assert first["root_provider_uuid"] == host
    links = {link["rel"]: link["href"] for link in first["links"]}
    assert links["self"] == f"/placement/resource_providers/{host}"
    assert links["inventories"] == f"/placement/resource_providers/{host}/inventories"
    assert links["usages"] == f"/placement/resource_providers/{host}/usages"


def test_list_filters_by_name_and_uuid(client: TestClient, placement: Placement, host: str) -> None:
    placement.ensure_provider(new_uuid(), "compute-2", {"VCPU": Inventory(8)})
    by_name = client.get("/placement/resource_providers", params={"name": "compute-1"}).json()
    assert [p["uuid"] for p in by_name["resource_providers"]] == [host]
    by_uuid = client.get("/placement/resource_providers", params={"uuid": host}).json()
    assert [p["name"] for p in by_uuid["resource_providers"]] == ["compute-1"]
    none = client.get("/placement/resource_providers", params={"name": "nope"}).json()
    assert none == {"resource_providers": []}


def test_show_resource_provider(client: TestClient, placement: Placement, host: str) -> None:
    child = new_uuid()
    placement.ensure_provider(child, "compute-1_numa0", {}, parent_provider_uuid=host)
    body = client.get(f"/placement/resource_providers/{child}").json()
    assert body["uuid"] == child and body["name"] == "compute-1_numa0"
    assert body["parent_provider_uuid"] == host
    assert body["root_provider_uuid"] == host
    assert body["generation"] == 0
    assert_not_found(client.get(f"/placement/resource_providers/{new_uuid()}"), "resource provider")


def test_inventories(client: TestClient, host: str) -> None:
    body = client.get(f"/placement/resource_providers/{host}/inventories").json()
    assert body["resource_provider_generation"] == 1
    assert body["inventories"]["VCPU"] == {
        "total": 16,
        "reserved": 1,
        "min_unit": 1,
        "max_unit": 16,
        "step_size": 1,
        "allocation_ratio": 4.0,
    }
    assert set(body["inventories"]) == {"VCPU", "MEMORY_MB", "DISK_GB"}
    missing = new_uuid()
    assert_not_found(client.get(f"/placement/resource_providers/{missing}/inventories"), missing)


def test_usages(client: TestClient, placement: Placement, host: str) -> None:
    body = client.get(f"/placement/resource_providers/{host}/usages").json()
    assert body == {
        "usages": {"VCPU": 0, "MEMORY_MB": 0, "DISK_GB": 0},
        "resource_provider_generation": 1,
    }
    placement.claim(new_uuid(), host, FLAVOR, "p", "u")
    body = client.get(f"/placement/resource_providers/{host}/usages").json()
    assert body == {"usages": FLAVOR, "resource_provider_generation": 2}
    assert_not_found(client.get(f"/placement/resource_providers/{new_uuid()}/usages"), "uuid")


def test_provider_allocations(client: TestClient, placement: Placement, host: str) -> None:
    a, b = new_uuid(), new_uuid()
    placement.claim(a, host, FLAVOR, "p", "u")
    placement.claim(b, host, {"VCPU": 1}, "p", "u")
    body = client.get(f"/placement/resource_providers/{host}/allocations").json()
    assert body == {
        "allocations": {a: {"resources": FLAVOR}, b: {"resources": {"VCPU": 1}}},
        "resource_provider_generation": 3,
    }
    assert_not_found(
        client.get(f"/placement/resource_providers/{new_uuid()}/allocations"), "resource provider"
    )


def test_consumer_allocations(client: TestClient, placement: Placement, host: str) -> None:
    other = new_uuid()
    placement.ensure_provider(other, "compute-2", {"VCPU": Inventory(8)})
    server = new_uuid()
    placement.replace_allocations(
        {server: AllocationRequest({host: FLAVOR, other: {"VCPU": 1}}, "proj", "user")}
    )
    body = client.get(f"/placement/allocations/{server}").json()
    assert body == {
        "allocations": {
            host: {"generation": 2, "resources": FLAVOR},
            other: {"generation": 2, "resources": {"VCPU": 1}},
        },
        "consumer_generation": 1,
        "project_id": "proj",
        "user_id": "user",
    }


def test_unknown_consumer_has_empty_allocations(client: TestClient) -> None:
    response = client.get(f"/placement/allocations/{new_uuid()}")
    assert response.status_code == 200
    assert response.json() == {"allocations": {}}
