"""Isolation between projects, admin-only fields and bad input: always a clear
4xx, never a 500."""

from __future__ import annotations

import pytest

from tests.harness import Atoll


def test_other_projects_servers_are_404(atoll: Atoll) -> None:
    server = atoll.create_server()
    sid = server["id"]
    assert atoll.other.get(f"/servers/{sid}").status_code == 404
    assert atoll.other.delete(f"/servers/{sid}").status_code == 404
    assert atoll.other.post(f"/servers/{sid}/action", json={"os-stop": None}).status_code == 404
    assert atoll.other.get(f"/servers/{sid}/os-instance-actions").status_code == 404
    assert sid not in {s["id"] for s in atoll.other.ok("GET", "/servers")["servers"]}
    assert atoll.other.get("/servers?all_tenants=1").status_code == 403
    assert "OS-EXT-SRV-ATTR:host" not in server
    assert "OS-EXT-SRV-ATTR:host" in atoll.admin.ok("GET", f"/servers/{sid}")["server"]
    atoll.assert_clean()


@pytest.mark.parametrize(
    ("mutate", "status", "needle"),
    [
        (lambda b: b["server"].update(flavorRef="nope"), 400, "Flavor nope could not be found"),
        (
            lambda b: b["server"].update(imageRef="3f2c1d2e-0000-4000-8000-000000000000"),
            400,
            "could not be found",
        ),
        (
            lambda b: b["server"].update(
                networks=[{"uuid": "3f2c1d2e-0000-4000-8000-000000000000"}]
            ),
            400,
            "Network",
        ),
        (lambda b: b["server"].update(networks=[{"port": "not-a-uuid"}]), 400, "port"),
        (lambda b: b["server"].pop("name"), 400, "name"),
        (lambda b: b["server"].update(name=""), 400, "name"),
        (lambda b: b["server"].update(availability_zone="atlantis"), 400, "availability zone"),
        (lambda b: b["server"].update(key_name="nokey"), 400, "key_name"),
        (lambda b: b["server"].update(bogus=1), 400, "bogus"),
        (lambda b: b["server"].pop("networks"), 400, "networks"),
        (lambda b: b["server"].update(min_count=0), 400, "min_count"),
    ],
)
def test_bad_create_bodies(atoll: Atoll, mutate, status: int, needle: str) -> None:  # type: ignore[no-untyped-def]
    body = atoll.server_body()
    mutate(body)
    resp = atoll.user.post("/servers", json=body)
    assert resp.status_code == status, resp.text
    assert needle.lower() in resp.text.lower()


def test_malformed_requests(atoll: Atoll) -> None:
    resp = atoll.user.request(
        "POST", "/servers", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status_code == 400
    assert atoll.user.get("/servers/not-a-uuid").status_code == 404
    assert (
        atoll.user.post(
            "/servers/00000000-0000-0000-0000-000000000000/action", json={"os-stop": None}
        ).status_code
        == 404
    )
    server = atoll.create_server()
    assert (
        atoll.user.post(f"/servers/{server['id']}/action", json={"explode": None}).status_code
        == 400
    )
    assert (
        atoll.user.post(
            f"/servers/{server['id']}/action", json={"reboot": {"type": "GENTLE"}}
        ).status_code
        == 400
    )
    assert atoll.user.post(f"/servers/{server['id']}/action", json=[1, 2]).status_code == 400
    resp = atoll.user.get("/servers", version="3.0")
    assert resp.status_code == 406
    assert atoll.client.get("/v2.1/servers").status_code == 401
    atoll.assert_clean()
