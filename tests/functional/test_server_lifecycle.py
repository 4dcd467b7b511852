"""The life of a server through the compute API, checked from the outside:
HTTP responses, hypervisor guests, placement allocations, ports and volumes,
instance actions, notifications, and a clean audit at the end."""

from __future__ import annotations

from typing import Any

from tests.harness import Atoll


def allocations(atoll: Atoll, consumer: str) -> dict[str, Any]:
    resp = atoll.client.get(
        f"/placement/allocations/{consumer}", headers={"X-Auth-Token": "dev:admin:admin:admin"}
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["allocations"]


def guests(atoll: Atoll, host: str) -> set[str]:
    return {g["uuid"] for g in atoll.admin.ok("GET", f"/atoll-admin/hosts/{host}/guests")["guests"]}


def actions(atoll: Atoll, server_id: str) -> list[dict[str, Any]]:
    return atoll.user.ok("GET", f"/servers/{server_id}/os-instance-actions")["instanceActions"]


def action_events(atoll: Atoll, server_id: str, request_id: str) -> list[dict[str, Any]]:
    body = atoll.admin.ok("GET", f"/servers/{server_id}/os-instance-actions/{request_id}")
    return body["instanceAction"]["events"]


def notifications(atoll: Atoll, server_id: str) -> list[str]:
    body = atoll.admin.ok("GET", f"/atoll-admin/notifications?instance_uuid={server_id}")
    return [n["event_type"] for n in body["notifications"]]


def test_image_backed_server_full_lifecycle(atoll: Atoll) -> None:
    net = atoll.runtime.networks
    port = net.create_port(atoll.network_id, project_id="demo", name="mine")
    body = atoll.server_body(name="web", flavor="1", tags=["test"], metadata={"role": "web"})
    body["server"]["networks"] = [{"port": port["id"], "tag": "private"}]
    created = atoll.user.ok("POST", "/servers", 202, json=body)
    server_id = created["server"]["id"]
    assert created["server"]["adminPass"]
    server = atoll.wait_for(atoll.user, server_id, "ACTIVE")

    assert server["OS-EXT-STS:power_state"] == 1
    assert server["tags"] == ["test"]
    assert server["metadata"] == {"role": "web"}
    assert server["image"]["id"] == atoll.image_id
    assert server["flavor"]["original_name"] == "m1.tiny"
    addr = server["addresses"]["private"][0]
    assert addr["addr"] == port["fixed_ips"][0]["ip_address"]
    assert addr["OS-EXT-IPS-MAC:mac_addr"] == port["mac_address"]
    assert "OS-EXT-SRV-ATTR:host" not in server  # admin-only

    host = atoll.admin.ok("GET", f"/servers/{server_id}")["server"]["OS-EXT-SRV-ATTR:host"]
    assert server_id in guests(atoll, host)
    allocs = allocations(atoll, server_id)
    assert [a["resources"] for a in allocs.values()] == [
        {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}
    ]
    bindings = net.bindings(port["id"])
    assert [(b["host"], b["status"]) for b in bindings] == [(host, "ACTIVE")]
    interfaces = atoll.user.ok("GET", f"/servers/{server_id}/os-interface")
    assert interfaces["interfaceAttachments"][0]["tag"] == "private"

    atoll.user.ok("POST", f"/servers/{server_id}/action", 202, json={"os-stop": None})
    stopped = atoll.wait_for(atoll.user, server_id, "SHUTOFF")
    assert stopped["OS-EXT-STS:power_state"] == 4
    atoll.user.ok("POST", f"/servers/{server_id}/action", 202, json={"os-start": None})
    assert atoll.wait_for(atoll.user, server_id, "ACTIVE")["OS-EXT-STS:power_state"] == 1
    atoll.user.ok("POST", f"/servers/{server_id}/action", 202, json={"reboot": {"type": "SOFT"}})
    atoll.wait_for(atoll.user, server_id, "ACTIVE")
    atoll.user.ok("POST", f"/servers/{server_id}/action", 202, json={"reboot": {"type": "HARD"}})
    atoll.wait_for(atoll.user, server_id, "ACTIVE")

    recorded = actions(atoll, server_id)
    assert [a["action"] for a in recorded] == ["reboot", "reboot", "start", "stop", "create"]
    for action in recorded:
        events = action_events(atoll, server_id, action["request_id"])
        assert events, action
        assert all(e["result"] == "Success" for e in events), events
    create_events = action_events(atoll, server_id, recorded[-1]["request_id"])
    assert [(e["event"], e["host"]) for e in create_events] == [
        ("compute__do_build_and_run_instance", host)
    ]
    assert {
        "instance.create.end",
        "instance.power_off.end",
        "instance.power_on.end",
        "instance.reboot.end",
    } <= set(notifications(atoll, server_id))
    atoll.assert_clean()

    atoll.user.ok("DELETE", f"/servers/{server_id}", 204)
    atoll.wait_gone(atoll.user, server_id)
    assert server_id not in guests(atoll, host)
    assert allocations(atoll, server_id) == {}
    kept = net.get_port(port["id"])  # the user's port survives, unbound
    assert kept["device_id"] == "" and net.bindings(port["id"]) == []
    assert "instance.delete.end" in notifications(atoll, server_id)
    atoll.assert_clean()


def test_volume_backed_server_with_tags_and_attach_detach(atoll: Atoll) -> None:
    vols = atoll.runtime.volumes
    root = vols.create(1, project_id="demo", name="root", image_id=atoll.image_id, bootable=True)
    data = vols.create(1, project_id="demo", name="data")
    body = atoll.server_body(name="bfv", flavor="1")
    body["server"]["imageRef"] = ""
    body["server"]["block_device_mapping_v2"] = [
        {
            "boot_index": 0,
            "uuid": root["id"],
            "source_type": "volume",
            "destination_type": "volume",
            "tag": "root",
        }
    ]
    server_id = atoll.user.ok("POST", "/servers", 202, json=body)["server"]["id"]
    server = atoll.wait_for(atoll.user, server_id, "ACTIVE")
    assert server["image"] == ""
    assert [v["id"] for v in server["os-extended-volumes:volumes_attached"]] == [root["id"]]
    allocs = allocations(atoll, server_id)
    assert [a["resources"] for a in allocs.values()] == [{"VCPU": 1, "MEMORY_MB": 512}]
    assert vols.get(root["id"])["status"] == "in-use"

    attached = atoll.user.ok(
        "POST",
        f"/servers/{server_id}/os-volume_attachments",
        200,
        json={"volumeAttachment": {"volumeId": data["id"], "tag": "data"}},
    )
    assert attached["volumeAttachment"]["volumeId"] == data["id"]
    for _ in range(500):
        if vols.get(data["id"])["status"] == "in-use":
            break
        import time

        time.sleep(0.01)
    assert vols.get(data["id"])["status"] == "in-use"
    listed = atoll.user.ok("GET", f"/servers/{server_id}/os-volume_attachments")
    assert {a["volumeId"]: a["tag"] for a in listed["volumeAttachments"]} == {
        root["id"]: "root",
        data["id"]: "data",
    }
    atoll.assert_clean()

    assert (
        atoll.user.delete(f"/servers/{server_id}/os-volume_attachments/{root['id']}").status_code
        == 400
    )  # the root volume stays
    atoll.user.ok("DELETE", f"/servers/{server_id}/os-volume_attachments/{data['id']}", 202)
    for _ in range(500):
        if vols.get(data["id"])["status"] == "available":
            break
        import time

        time.sleep(0.01)
    assert vols.get(data["id"])["status"] == "available"

    atoll.user.ok("DELETE", f"/servers/{server_id}", 204)
    atoll.wait_gone(atoll.user, server_id)
    assert vols.get(root["id"])["status"] == "available"
    assert vols.all_attachments() == []
    atoll.assert_clean()


def test_listing_filters_sorting_and_paging(atoll: Atoll) -> None:
    ids = [atoll.create_server(name=f"srv-{i}")["id"] for i in range(4)]
    other = atoll.create_server(atoll.other, name="theirs")["id"]
    listed = atoll.user.ok("GET", "/servers")["servers"]
    assert {s["id"] for s in listed} == set(ids)
    assert other not in {s["id"] for s in atoll.admin.ok("GET", "/servers")["servers"]}
    everyone = atoll.admin.ok("GET", "/servers/detail?all_tenants=1")["servers"]
    assert {s["id"] for s in everyone} == {*ids, other}
    by_name = atoll.user.ok("GET", "/servers/detail?name=srv-2")["servers"]
    assert [s["id"] for s in by_name] == [ids[2]]
    asc = atoll.user.ok("GET", "/servers?sort_key=display_name&sort_dir=asc")["servers"]
    assert [s["name"] for s in asc] == [f"srv-{i}" for i in range(4)]
    page1 = atoll.user.ok("GET", "/servers?sort_key=display_name&sort_dir=asc&limit=2")
    assert [s["name"] for s in page1["servers"]] == ["srv-0", "srv-1"]
    assert page1["servers_links"][0]["rel"] == "next"
    marker = page1["servers"][-1]["id"]
    page2 = atoll.user.ok("GET", f"/servers?sort_key=display_name&sort_dir=asc&marker={marker}")
    assert [s["name"] for s in page2["servers"]] == ["srv-2", "srv-3"]
    assert atoll.user.get("/servers?sort_key=bogus").status_code == 400
    assert atoll.user.get("/servers?marker=" + other).status_code == 400
    stopped = atoll.user.ok("GET", "/servers?status=SHUTOFF")["servers"]
    assert stopped == []
    atoll.assert_clean()


def test_anti_affinity_spreads_members_and_refuses_a_fifth(atoll: Atoll) -> None:
    group = atoll.user.ok(
        "POST",
        "/os-server-groups",
        200,
        version="2.64",
        json={"server_group": {"name": "spread", "policy": "anti-affinity"}},
    )["server_group"]
    hosts = []
    for i in range(4):
        sid = atoll.create_server(name=f"member-{i}", hints={"group": group["id"]})["id"]
        hosts.append(atoll.admin.ok("GET", f"/servers/{sid}")["server"]["OS-EXT-SRV-ATTR:host"])
    assert sorted(hosts) == ["host1", "host2", "host3", "host4"]
    fifth = atoll.create_server(name="member-5", hints={"group": group["id"]}, wait="ERROR")
    assert "No valid host" in fifth["fault"]["message"]
    assert allocations(atoll, fifth["id"]) == {}
    members = atoll.user.ok("GET", f"/os-server-groups/{group['id']}")["server_group"]["members"]
    assert len(members) == 5
    atoll.assert_clean()


def test_no_valid_host_leaves_an_error_server_and_no_allocation(atoll: Atoll) -> None:
    atoll.admin.ok(
        "POST",
        "/flavors",
        200,
        json={"flavor": {"name": "huge", "ram": 512, "vcpus": 1, "disk": 100_000, "id": "huge"}},
    )
    server = atoll.create_server(flavor="huge", wait="ERROR")
    assert server["fault"]["message"].startswith("No valid host was found")
    assert server["OS-EXT-STS:task_state"] is None
    assert allocations(atoll, server["id"]) == {}
    assert "compute_task.build_instances.error" in notifications(atoll, server["id"])
    atoll.assert_clean()
    atoll.user.ok("DELETE", f"/servers/{server['id']}", 204)
    atoll.wait_gone(atoll.user, server["id"])
    atoll.assert_clean()


def test_spawn_failure_on_first_host_lands_on_an_alternate(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = make_atoll(scheduler={"host_weights": {"host1": 100.0, "host2": 50.0}})
    atoll.admin.ok(
        "PUT",
        "/atoll-admin/faults",
        200,
        json={"faults": {"virt.sim.spawn": "raise:HypervisorUnavailable;host=host1"}},
    )
    server = atoll.create_server(name="retry")
    admin_view = atoll.admin.ok("GET", f"/servers/{server['id']}")["server"]
    assert admin_view["OS-EXT-SRV-ATTR:host"] == "host2"
    assert server["id"] not in guests(atoll, "host1")
    allocs = allocations(atoll, server["id"])
    providers = {
        p["uuid"]: p["name"]
        for p in atoll.client.get(
            "/placement/resource_providers", headers={"X-Auth-Token": "dev:admin:admin:admin"}
        ).json()["resource_providers"]
    }
    assert [providers[p] for p in allocs] == ["host2"]
    create = actions(atoll, server["id"])[-1]
    events = action_events(atoll, server["id"], create["request_id"])
    assert events[-1]["result"] == "Success" and events[-1]["host"] == "host2"
    atoll.admin.ok("PUT", "/atoll-admin/faults", 200, json={"faults": {}})
    atoll.assert_clean()


def test_spawn_failure_everywhere_is_error_with_a_fault(make_atoll) -> None:  # type: ignore[no-untyped-def]
    atoll = make_atoll()
    atoll.admin.ok(
        "PUT",
        "/atoll-admin/faults",
        200,
        json={"faults": {"virt.sim.spawn": "raise:HypervisorUnavailable"}},
    )
    server = atoll.create_server(name="doomed", wait="ERROR")
    assert "Connection to the hypervisor is broken" in server["fault"]["message"]
    assert allocations(atoll, server["id"]) == {}
    atoll.admin.ok("PUT", "/atoll-admin/faults", 200, json={"faults": {}})
    atoll.assert_clean()
    atoll.user.ok("DELETE", f"/servers/{server['id']}", 204)
    atoll.wait_gone(atoll.user, server["id"])
    atoll.assert_clean()


def test_quota_is_enforced_with_403(atoll: Atoll) -> None:
    atoll.admin.ok("PUT", "/os-quota-sets/demo", 200, json={"quota_set": {"instances": 1}})
    atoll.create_server(name="one")
    resp = atoll.user.post("/servers", json=atoll.server_body(name="two"))
    assert resp.status_code == 403, resp.text
    assert "Quota exceeded for instances" in resp.json()["forbidden"]["message"]
    limits = atoll.user.ok("GET", "/limits")["limits"]["absolute"]
    assert limits["totalInstancesUsed"] == 1 and limits["maxTotalInstances"] == 1
    atoll.assert_clean()


def test_conflicting_actions_get_409(atoll: Atoll) -> None:
    server = atoll.create_server(name="busy")
    resp = atoll.user.post(f"/servers/{server['id']}/action", json={"os-start": None})
    assert resp.status_code == 409
    assert "vm_state active" in resp.json()["conflictingRequest"]["message"]
    atoll.admin.ok(
        "PUT", "/atoll-admin/faults", 200, json={"faults": {"compute.power_off": "hang:0.5"}}
    )
    atoll.user.ok("POST", f"/servers/{server['id']}/action", 202, json={"os-stop": None})
    second = atoll.user.post(f"/servers/{server['id']}/action", json={"os-stop": None})
    assert second.status_code == 409
    atoll.wait_for(atoll.user, server["id"], "SHUTOFF")
    atoll.admin.ok("PUT", "/atoll-admin/faults", 200, json={"faults": {}})
    atoll.assert_clean()


def test_conductor_audits_periodically_and_counts_what_it_finds(make_atoll, caplog) -> None:  # type: ignore[no-untyped-def]
    import logging
    import time
    import uuid

    atoll = make_atoll(periodic_interval=0.1, audit_interval=0.2)
    stats = atoll.admin.ok("GET", "/atoll-admin/audit/stats")["audit_stats"]
    assert atoll.user.get("/atoll-admin/audit/stats").status_code == 403
    deadline = time.monotonic() + 10
    while stats["runs"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = atoll.admin.ok("GET", "/atoll-admin/audit/stats")["audit_stats"]
    assert stats["runs"] >= 1 and stats["last"]["clean"]
    # an allocation for a consumer that is no server: the next audit must report it
    provider = atoll.runtime.placement.list_providers(name="host1")[0]
    stray = str(uuid.uuid4())
    with caplog.at_level(logging.WARNING, logger="atoll"):
        atoll.runtime.placement.claim(stray, provider.uuid, {"VCPU": 1}, "p", "u")
        runs = stats["runs"]
        while time.monotonic() < deadline:
            stats = atoll.admin.ok("GET", "/atoll-admin/audit/stats")["audit_stats"]
            if stats["runs"] > runs + 1:
                break
            time.sleep(0.05)
    assert stats["problems_by_kind"].get("orphan_allocation", 0) >= 1
    assert any(p["resource"] == stray for p in stats["last"]["problems"])
    assert any(
        "orphan_allocation" in r.getMessage() and stray in r.getMessage() for r in caplog.records
    )
    atoll.runtime.placement.delete_allocations(stray)
    atoll.assert_clean()
