"""Faults at the build workflow's first and last steps, found by the stateful test:
a failed scheduling step must not leave a server in BUILD (or its claim behind),
and a repeated activate must not tear down a server that is already ACTIVE."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Atoll


def _create(atoll: Atoll) -> str:
    body = atoll.server_body(name="b", flavor="1")
    return atoll.admin.ok("POST", "/servers", 202, json=body)["server"]["id"]


def _settled(atoll: Atoll, server_id: str) -> dict[str, Any]:
    for status in ("ACTIVE", "ERROR"):
        try:
            return atoll.wait_for(atoll.admin, server_id, status, timeout=20)
        except AssertionError:
            continue
    raise AssertionError(f"{server_id} settled neither ACTIVE nor ERROR")


@pytest.mark.parametrize("action", ["raise*1", "hang:2*1", "drop_reply*1"])
def test_failed_scheduling_buries_the_server_in_error(make_atoll: Any, action: str) -> None:
    atoll = make_atoll(timeouts={"rpc_call": 1.0, "workflow_step": 1.0})
    atoll.admin.ok(
        "PUT", "/atoll-admin/faults", json={"faults": {"conductor.build.schedule": action}}
    )
    server_id = _create(atoll)
    server = _settled(atoll, server_id)
    assert server["status"] == "ERROR" and server["fault"]["message"], server
    atoll.assert_clean()  # no claim left on any host
    assert atoll.admin.delete(f"/servers/{server_id}").status_code == 204
    atoll.wait_gone(atoll.admin, server_id)
    atoll.assert_clean()


def test_activate_run_twice_keeps_the_server(make_atoll: Any) -> None:
    atoll = make_atoll()
    faults = {"conductor.build.activate": "duplicate_reply*1"}
    atoll.admin.ok("PUT", "/atoll-admin/faults", json={"faults": faults})
    server_id = _create(atoll)
    assert atoll.wait_for(atoll.admin, server_id, "ACTIVE")["OS-EXT-SRV-ATTR:host"]
    atoll.assert_clean()  # its guest and its allocation are there
    assert atoll.admin.delete(f"/servers/{server_id}").status_code == 204
    atoll.wait_gone(atoll.admin, server_id)
    atoll.assert_clean()
