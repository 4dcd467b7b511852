"""A real `atoll serve` process is killed (SIGKILL, through the `kill` fault) at a
step boundary of a cross-cell resize, then started again on the same data: the
durable workflow resumes; before the point of no return it rolls the move back
(the server is usable at its source and a retry succeeds), at the cut-over it
goes on to VERIFY_RESIZE; the audit is clean either way.  (Embedded mode: one
process holds conductor and computes, so killing it kills both; the kill matrix
in test_kill_matrix.py kills them one at a time.)"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serve_process import ServeProcess, wait_settled

ADMIN = {"X-Auth-Token": "dev:admin:admin:admin", "OpenStack-API-Version": "compute 2.100"}
MOVE_STEPS = [
    "allocations",
    "schedule",
    "copy_to_target",
    "prep_dest",
    "prep_source",
    "finish_dest",
    "cut_over",
]


class Serve(ServeProcess):
    """The shared serve process plus the admin calls this suite makes."""

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**ADMIN, **kw.pop("headers", {})}
        return httpx.request(method, f"{self.base}/v2.1{path}", headers=headers, timeout=30, **kw)

    def settle(self, server_id: str, timeout: float = 60) -> dict[str, Any]:
        return wait_settled(
            lambda: self.api("GET", f"/servers/{server_id}").json()["server"], timeout
        )


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    instance = Serve(tmp_path)
    instance.start()
    yield instance
    instance.stop()


@pytest.mark.parametrize("step", MOVE_STEPS)
def test_kill_during_cross_cell_resize_resolves_after_restart(serve: Serve, step: str) -> None:
    image = serve.api("GET", "/images", headers={"OpenStack-API-Version": "compute 2.35"}).json()[
        "images"
    ][0]["id"]
    created = serve.api(
        "POST",
        "/servers",
        json={
            "server": {"name": "victim", "imageRef": image, "flavorRef": "1", "networks": "auto"}
        },
    )
    server_id = created.json()["server"]["id"]
    source = serve.settle(server_id)["OS-EXT-SRV-ATTR:host"]
    assert (
        serve.api(
            "PUT", "/atoll-admin/faults", json={"faults": {f"conductor.move.{step}": "kill"}}
        ).status_code
        == 200
    )
    serve.api("POST", f"/servers/{server_id}/action", json={"resize": {"flavorRef": "2"}})
    assert serve.wait_exit() == -9  # really killed, mid-move
    serve.start()  # same data: the workflow engine resumes the move
    server = serve.settle(server_id)
    migrations = serve.api("GET", f"/os-migrations?instance_uuid={server_id}").json()
    if step != "cut_over":  # before the point of no return: rolled back, usable
        assert server["status"] == "ACTIVE", server.get("fault")
        assert server["OS-EXT-SRV-ATTR:host"] == source
        assert server["flavor"]["original_name"] == "m1.tiny"
        assert [m["status"] for m in migrations["migrations"]] == ["error"]
        assert serve.api("GET", "/atoll-admin/audit").json()["clean"]
        resize = {"resize": {"flavorRef": "2"}}
        assert serve.api("POST", f"/servers/{server_id}/action", json=resize).status_code == 202
        server = serve.settle(server_id)
    assert server["status"] == "VERIFY_RESIZE", server.get("fault")
    assert server["OS-EXT-SRV-ATTR:host"] != source
    assert server["flavor"]["original_name"] == "m1.small"
    audit = serve.api("GET", "/atoll-admin/audit").json()
    assert audit["clean"], audit
    # and the move can be confirmed as if nothing had happened
    assert (
        serve.api("POST", f"/servers/{server_id}/action", json={"confirmResize": None}).status_code
        == 204
    )
    assert serve.settle(server_id)["status"] == "ACTIVE"
    assert serve.api("GET", "/atoll-admin/audit").json()["clean"]
