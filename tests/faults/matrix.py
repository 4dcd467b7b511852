"""The fault matrix: every fault point of a move x every fault kind x
{image-backed, volume-backed} x {running, stopped}.

A cell boots a server, (for confirm and revert) resizes it across cells first,
arms one fault, runs the operation, restarts whatever was killed, waits for the
server to settle and checks: the server is where it started (usable, or in ERROR
and brought back by a hard reboot) or where it was going; the audit is clean;
retrying the operation then succeeds; deleting the server leaves the audit clean.

Two drivers run cells: an embedded atoll in this process (raise, hang, drop_reply,
duplicate_reply) and a cluster of real processes (kill: the conductor or a compute
is SIGKILLed and started again).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

CROSS_CELL_FLAVOR = {"resize": "2"}  # m1.tiny -> m1.small


@dataclass(frozen=True)
class Row:
    point: str
    operation: str  # resize | confirm | revert
    where: str  # conductor | source | dest: the process the point fires in


ROWS = [
    Row("conductor.move.allocations", "resize", "conductor"),
    Row("conductor.move.schedule", "resize", "conductor"),
    Row("conductor.move.copy_to_target", "resize", "conductor"),
    Row("conductor.move.prep_dest", "resize", "conductor"),
    Row("conductor.move.prep_source", "resize", "conductor"),
    Row("conductor.move.finish_dest", "resize", "conductor"),
    Row("conductor.move.cut_over", "resize", "conductor"),
    Row("compute.prep_snapshot_based_resize_at_dest", "resize", "dest"),
    Row("compute.prep_snapshot_based_resize_at_source", "resize", "source"),
    Row("compute.finish_snapshot_based_resize_at_dest", "resize", "dest"),
    Row("conductor.move.confirm", "confirm", "conductor"),
    Row("compute.confirm_snapshot_based_resize_at_source", "confirm", "source"),
    Row("conductor.move.revert", "revert", "conductor"),
    Row("compute.revert_snapshot_based_resize_at_dest", "revert", "dest"),
    Row("compute.finish_revert_snapshot_based_resize_at_source", "revert", "source"),
]
IN_PROCESS_KINDS = ["raise", "hang", "drop_reply", "duplicate_reply"]
KINDS = [*IN_PROCESS_KINDS, "kill"]
VARIANTS = [(b, p) for b in ("image", "volume") for p in ("running", "stopped")]
QUICK_VARIANT = ("image", "running")


def action_for(kind: str, hang_seconds: float) -> str:
    """Each fault fires once, so the retry after it runs clean."""
    if kind == "hang":
        return f"hang:{hang_seconds:g}*1"
    if kind == "kill":
        return "kill"
    return f"{kind}*1"


class Driver(Protocol):
    def api(self, method: str, path: str, **kw: Any) -> Any: ...
    def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any: ...
    def settle(self, server_id: str, timeout: float = 90) -> dict[str, Any]: ...
    def image_id(self) -> str: ...
    def create_volume(self, image_id: str) -> str: ...
    def arm(self, row: Row, kind: str, hosts: dict[str, str]) -> None: ...
    def recover(self, row: Row, kind: str, hosts: dict[str, str]) -> None: ...
    def disarm(self) -> None: ...


def _action(d: Driver, server_id: str, body: dict[str, Any]) -> None:
    resp = d.api("POST", f"/servers/{server_id}/action", json=body)
    assert resp.status_code in (202, 204), f"{body}: {resp.status_code} {resp.text}"


def _op_body(operation: str) -> dict[str, Any]:
    return {
        "resize": {"resize": {"flavorRef": CROSS_CELL_FLAVOR["resize"]}},
        "confirm": {"confirmResize": None},
        "revert": {"revertResize": None},
    }[operation]


def _audit_clean(d: Driver, when: str) -> None:
    report = d.ok("GET", "/atoll-admin/audit")
    assert report["clean"], f"audit {when}: {json.dumps(report['problems'], indent=1)}"


def _settled_status(power: str) -> str:
    return "ACTIVE" if power == "running" else "SHUTOFF"


def boot(d: Driver, backing: str, power: str) -> str:
    image = d.image_id()
    server: dict[str, Any] = {"name": "m", "flavorRef": "1", "networks": "auto"}
    if backing == "volume":
        server["imageRef"] = ""
        server["block_device_mapping_v2"] = [
            {
                "boot_index": 0,
                "uuid": d.create_volume(image),
                "source_type": "volume",
                "destination_type": "volume",
                "delete_on_termination": True,
            }
        ]
    else:
        server["imageRef"] = image
    server_id = d.ok("POST", "/servers", 202, json={"server": server})["server"]["id"]
    assert d.settle(server_id)["status"] == "ACTIVE"
    if power == "stopped":
        _action(d, server_id, {"os-stop": None})
        assert d.settle(server_id)["status"] == "SHUTOFF"
    return server_id


def _recover_error(d: Driver, server_id: str, server: dict[str, Any]) -> dict[str, Any]:
    """ERROR is allowed after a fault if a hard reboot brings the server back."""
    assert server.get("fault"), "a server in ERROR must say why"
    _action(d, server_id, {"reboot": {"type": "HARD"}})
    server = d.settle(server_id)
    assert server["status"] == "ACTIVE", f"hard reboot did not recover it: {server.get('fault')}"
    return server


def run_cell(d: Driver, row: Row, kind: str, backing: str, power: str) -> str:
    """Run one cell; return how it ended ('completed', 'rolled back', ...)."""
    server_id = boot(d, backing, power)
    source = d.settle(server_id)["OS-EXT-SRV-ATTR:host"]
    dest = None
    if row.operation in ("confirm", "revert"):
        _action(d, server_id, _op_body("resize"))
        resized = d.settle(server_id)
        assert resized["status"] == "VERIFY_RESIZE", resized.get("fault")
        dest = resized["OS-EXT-SRV-ATTR:host"]
    hosts = {"source": source, "dest": dest or _other_host(d, source)}
    d.arm(row, kind, hosts)
    try:
        _action(d, server_id, _op_body(row.operation))
        d.recover(row, kind, hosts)
        server = d.settle(server_id)
    finally:
        d.disarm()
    ended = _check(d, row, server_id, server, source, power)
    _audit_clean(d, f"after the fault ({ended})")
    if ended != "completed":
        _retry(d, row, server_id, source, power)
        _audit_clean(d, "after the retry")
    assert d.api("DELETE", f"/servers/{server_id}").status_code == 204
    _wait_gone(d, server_id)
    _audit_clean(d, "after deleting the server")
    return ended


def _other_host(d: Driver, source: str) -> str:
    hosts = [h["hypervisor_hostname"] for h in d.ok("GET", "/os-hypervisors")["hypervisors"]]
    return next(h for h in hosts if h != source)


def _check(
    d: Driver, row: Row, server_id: str, server: dict[str, Any], source: str, power: str
) -> str:
    status, host = server["status"], server["OS-EXT-SRV-ATTR:host"]
    flavor = server["flavor"]["original_name"]
    if row.operation == "resize":
        if status == "VERIFY_RESIZE":
            assert host != source and flavor == "m1.small", server
            return "completed"
        assert host == source and flavor == "m1.tiny", server
        if status == "ERROR":
            _recover_error(d, server_id, server)
            return "rolled back to ERROR, recovered"
        assert status == _settled_status(power), server
        return "rolled back"
    if row.operation == "confirm":
        assert host != source and flavor == "m1.small", server
        if status == _settled_status(power):
            return "completed"
        if status == "ERROR":
            _recover_error(d, server_id, server)
            return "ERROR, recovered"
        assert status == "VERIFY_RESIZE", server
        return "not confirmed"
    # revert
    if status == _settled_status(power) and host == source:
        assert flavor == "m1.tiny", server
        return "completed"
    if status == "ERROR":
        _recover_error(d, server_id, server)
        return "ERROR, recovered"
    assert status == "VERIFY_RESIZE" and host != source, server
    return "not reverted"


def _retry(d: Driver, row: Row, server_id: str, source: str, power: str) -> None:
    server = d.settle(server_id)
    if row.operation == "resize":
        _action(d, server_id, _op_body("resize"))
        server = d.settle(server_id)
        assert server["status"] == "VERIFY_RESIZE", server.get("fault")
        return
    if server["status"] == "VERIFY_RESIZE":
        _action(d, server_id, _op_body(row.operation))
        server = d.settle(server_id)
        assert server["status"] in ("ACTIVE", "SHUTOFF"), server.get("fault")


def _wait_gone(d: Driver, server_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if d.api("GET", f"/servers/{server_id}").status_code == 404:
            return
        time.sleep(0.05)
    raise AssertionError(f"{server_id} was not deleted")


# ---------------------------------------------------------------------- the table


class Results:
    """Pass counts per (point, kind), printed as the matrix at the end of the run."""

    def __init__(self) -> None:
        self.cells: dict[tuple[str, str], list[bool]] = {}
        self.endings: dict[str, int] = {}
        self.notes: list[str] = []  # other fault suites' summaries (hypothesis)

    def record(self, point: str, kind: str, passed: bool, ended: str | None) -> None:
        self.cells.setdefault((point, kind), []).append(passed)
        if ended:
            self.endings[ended] = self.endings.get(ended, 0) + 1

    def table(self) -> list[str]:
        if not self.cells:
            return list(self.notes)
        kinds = [k for k in KINDS if any(key[1] == k for key in self.cells)]
        points = [r.point for r in ROWS if any(key[0] == r.point for key in self.cells)]
        width = max(len(p) for p in points)
        lines = [f"{'fault point':<{width}}  " + "  ".join(f"{k:>15}" for k in kinds)]
        for point in points:
            row = []
            for kind in kinds:
                results = self.cells.get((point, kind), [])
                row.append(f"{sum(results)}/{len(results)}" if results else "-")
            lines.append(f"{point:<{width}}  " + "  ".join(f"{c:>15}" for c in row))
        total = [r for results in self.cells.values() for r in results]
        lines.append(
            f"cells: {len(total)}, passed: {sum(total)}, failed: {len(total) - sum(total)}"
        )
        if self.endings:
            lines.append(
                "endings: " + ", ".join(f"{k} {v}" for k, v in sorted(self.endings.items()))
            )
        return lines + self.notes

    def write(self, path: Path) -> None:
        path.write_text(
            json.dumps(
                {
                    "cells": [
                        {"point": p, "kind": k, "passed": sum(r), "total": len(r)}
                        for (p, k), r in sorted(self.cells.items())
                    ],
                    "endings": self.endings,
                },
                indent=1,
            )
        )


RESULTS = Results()
