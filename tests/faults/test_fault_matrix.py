"""The fault matrix, in-process kinds: raise, hang, drop_reply, duplicate_reply at
every fault point of a cross-cell move, for image- and volume-backed servers,
running and stopped, on one embedded atoll (see tests/faults/matrix.py).

The quick subset (image-backed, running) runs first; the other variants carry
the ``full_matrix`` mark (`-m "not full_matrix"` skips them in a hurry; CI runs all).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.faults import matrix
from tests.faults.matrix import IN_PROCESS_KINDS, QUICK_VARIANT, RESULTS, ROWS, VARIANTS, Row
from tests.harness import Atoll, running_atoll
from tests.serve_process import wait_settled

RPC_TIMEOUT_S = 1.0
HANG_S = 1.5  # longer than the RPC and step timeouts


class Embedded:
    def __init__(self, atoll: Atoll) -> None:
        self.atoll = atoll

    def api(self, method: str, path: str, **kw: Any) -> Any:
        return self.atoll.admin.request(method, path, **kw)

    def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        return self.atoll.admin.ok(method, path, expect, **kw)

    def settle(self, server_id: str, timeout: float = 90) -> dict[str, Any]:
        return wait_settled(
            lambda: self.ok("GET", f"/servers/{server_id}")["server"], timeout, poll=0.02
        )

    def image_id(self) -> str:
        return self.atoll.image_id

    def create_volume(self, image_id: str) -> str:
        volumes = self.atoll.runtime.volumes
        return volumes.create(1, project_id="admin", image_id=image_id, bootable=True)["id"]

    def arm(self, row: Row, kind: str, hosts: dict[str, str]) -> None:
        action = matrix.action_for(kind, HANG_S)
        self.ok("PUT", "/atoll-admin/faults", json={"faults": {row.point: action}})

    def recover(self, row: Row, kind: str, hosts: dict[str, str]) -> None:
        return None  # nothing was killed

    def disarm(self) -> None:
        self.ok("PUT", "/atoll-admin/faults", json={"faults": {}})


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Embedded]:
    with running_atoll(
        tmp_path_factory.mktemp("matrix"),
        cells={"cell1": ["host1"], "cell2": ["host2"]},  # every move crosses cells
        timeouts={"rpc_call": RPC_TIMEOUT_S, "workflow_step": RPC_TIMEOUT_S},
        quota={"instances": 1000, "cores": 4000, "ram": 4096000},
    ) as atoll:
        yield Embedded(atoll)


def _cells() -> list[Any]:
    params = []
    for variant in [QUICK_VARIANT, *[v for v in VARIANTS if v != QUICK_VARIANT]]:
        marks = [] if variant == QUICK_VARIANT else [pytest.mark.full_matrix]
        for row in ROWS:
            for kind in IN_PROCESS_KINDS:
                params.append(
                    pytest.param(row, kind, *variant, marks=marks, id=f"{row.point}-{kind}-"
                                 f"{variant[0]}-{variant[1]}")
                )  # fmt: skip
    return params


@pytest.mark.parametrize(("row", "kind", "backing", "power"), _cells())
def test_fault_cell(driver: Embedded, row: Row, kind: str, backing: str, power: str) -> None:
    ended = None
    try:
        ended = matrix.run_cell(driver, row, kind, backing, power)
    finally:
        RESULTS.record(row.point, kind, ended is not None, ended)
