"""A compute that starts again asks its cell DB about what it finds on its host:
guests and kept disks of servers the cell no longer has (the operation that made
them was undone or abandoned while the compute was down) go; the guests of live
servers, hidden copies of a move included, stay."""

from __future__ import annotations

import uuid
from typing import Any

from atoll.context import RequestContext

FLAVOR = {"vcpus": 1, "memory_mb": 512, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}


def _call(atoll: Any, host: str, method: str, **kw: Any) -> Any:
    rt = atoll.runtime
    return rt.compute(rt.cells.for_host(host)).call(RequestContext.admin(), host, method, **kw)


def _guests(atoll: Any, host: str) -> set[str]:
    body = atoll.admin.ok("GET", f"/atoll-admin/hosts/{host}/guests")
    return {g["uuid"] for g in body["guests"]}


def test_restarted_compute_removes_what_no_server_owns(make_atoll: Any) -> None:
    atoll = make_atoll(cells={"cell1": ["host1"], "cell2": ["host2"]})
    server = atoll.create_server()["id"]
    host = atoll.admin.ok("GET", f"/servers/{server}")["server"]["OS-EXT-SRV-ATTR:host"]
    ghost, stashed = str(uuid.uuid4()), str(uuid.uuid4())
    for orphan in (ghost, stashed):
        _call(atoll, host, "spawn", instance_uuid=orphan, flavor=FLAVOR,
              image_id=atoll.image_id, block_devices=[])  # fmt: skip
    _call(atoll, host, "stash_guest", instance_uuid=stashed, move_event="compute_resize_instance")
    driver = atoll.embedded.computes[host].driver
    assert stashed in driver.list_kept_disks()
    assert ghost in _guests(atoll, host)
    assert not atoll.audit()["clean"]  # an orphan guest

    atoll.embedded.stop_compute(host)
    atoll.embedded.start_compute(host)

    driver = atoll.embedded.computes[host].driver
    assert _guests(atoll, host) == {server}
    assert stashed not in driver.list_kept_disks()
    atoll.assert_clean()
    assert atoll.admin.ok("GET", f"/servers/{server}")["server"]["status"] == "ACTIVE"
