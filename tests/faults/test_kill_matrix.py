"""The fault matrix, kill column: at every fault point of a cross-cell move the
process it fires in (the conductor, the source or the destination compute) is
SIGKILLed for real, then started again; and a conductor that dies and stays dead
has its workflows taken over by another (see tests/faults/matrix.py).

Runs `atoll api`, `atoll conductor` and `atoll compute` as separate processes on
a RabbitMQ virtual host of their own (tests/cluster.py).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atoll.services.volume import VolumeService
from tests.cluster import Cluster
from tests.faults import matrix
from tests.faults.matrix import QUICK_VARIANT, RESULTS, ROWS, VARIANTS, Row

pytestmark = pytest.mark.rabbit

CONDUCTOR = "conductor-a"


class ClusterDriver:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.volumes = VolumeService(f"sqlite:///{(cluster.root / 'services.sqlite').resolve()}")
        self.target: str | None = None

    def api(self, method: str, path: str, **kw: Any) -> Any:
        return self.cluster.api(method, path, **kw)

    def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        return self.cluster.ok(method, path, expect, **kw)

    def settle(self, server_id: str, timeout: float = 90) -> dict[str, Any]:
        return self.cluster.settle(server_id, timeout)

    def image_id(self) -> str:
        return self.cluster.image_id()

    def create_volume(self, image_id: str) -> str:
        return self.volumes.create(1, project_id="admin", image_id=image_id, bootable=True)["id"]

    def _process(self, row: Row, hosts: dict[str, str]) -> str:
        return CONDUCTOR if row.where == "conductor" else hosts[row.where]

    def restart(self, name: str, faults: dict[str, str] | None = None) -> None:
        cluster = self.cluster
        marker = f"{name} running"
        before = cluster.log(name).count(marker)
        cluster.stop_process(name)
        if name.startswith("conductor"):
            cluster.start_conductor(name, faults)
        else:
            cluster.start_compute(name, faults)
        cluster.wait_until(
            lambda: cluster.log(name).count(marker) > before, 60, f"{name} did not start"
        )

    def arm(self, row: Row, kind: str, hosts: dict[str, str]) -> None:
        self.target = self._process(row, hosts)
        self.restart(self.target, {row.point: "kill"})

    def recover(self, row: Row, kind: str, hosts: dict[str, str]) -> None:
        assert self.target is not None
        code = self.cluster.wait_exit(self.target, timeout=60)
        assert code == -9, f"{self.target} exited {code}, not killed at {row.point}"
        self.restart(self.target)

    def disarm(self) -> None:
        self.target = None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    deployment = Cluster(tmp_path_factory.mktemp("cluster"), cells=2, hosts=1)
    deployment.start()
    yield deployment
    deployment.stop()


def _cells() -> list[Any]:
    params = []
    for variant in [QUICK_VARIANT, *[v for v in VARIANTS if v != QUICK_VARIANT]]:
        marks = [] if variant == QUICK_VARIANT else [pytest.mark.full_matrix]
        for row in ROWS:
            params.append(
                pytest.param(
                    row, *variant, marks=marks, id=f"{row.point}-{variant[0]}-{variant[1]}"
                )
            )
    return params


@pytest.mark.parametrize(("row", "backing", "power"), _cells())
def test_kill_cell(cluster: Cluster, row: Row, backing: str, power: str) -> None:
    ended = None
    try:
        ended = matrix.run_cell(ClusterDriver(cluster), row, "kill", backing, power)
    finally:
        RESULTS.record(row.point, "kill", ended is not None, ended)


def test_dead_conductor_is_taken_over(tmp_path: Path) -> None:
    """Two conductors; the one driving a move dies mid-move and stays dead: the
    other takes its workflows over after timeouts.conductor_takeover and rolls
    the move back (it died before the point of no return); a retry succeeds.
    While no conductor runs, the audit reports the move as stuck."""
    cluster = Cluster(tmp_path, cells=2, hosts=1).start()
    try:
        driver = ClusterDriver(cluster)
        driver.restart(CONDUCTOR, {"conductor.move.prep_source": "kill"})
        server_id = matrix.boot(driver, "image", "running")
        source = cluster.server(server_id)["OS-EXT-SRV-ATTR:host"]
        cluster.ok("POST", f"/servers/{server_id}/action", 202, json={"resize": {"flavorRef": "2"}})
        assert cluster.wait_exit(CONDUCTOR, timeout=60) == -9, "not killed at prep_source"
        started = time.monotonic()

        def stuck() -> list[dict[str, Any]]:
            problems = cluster.ok("GET", "/atoll-admin/audit")["problems"]
            return [p for p in problems if p["kind"] == "stuck_workflow"]

        # no conductor is left: once the takeover delay is over, the move is stuck
        cluster.wait_until(lambda: bool(stuck()), 30, "the audit did not see the stuck move")
        assert "conductor-a" in stuck()[0]["detail"]
        # conductor-b starts after a died, so only a takeover can resume the move
        cluster.start_conductor("conductor-b")
        server = cluster.settle(server_id, timeout=120)
        waited = time.monotonic() - started
        assert server["OS-EXT-SRV-ATTR:host"] == source
        assert server["status"] == "ACTIVE", server.get("fault")
        assert "took over" in cluster.log("conductor-b")
        assert waited >= 2, "the takeover came before timeouts.conductor_takeover"
        migrations = cluster.ok("GET", f"/os-migrations?instance_uuid={server_id}")["migrations"]
        assert [m["status"] for m in migrations] == ["error"]
        assert cluster.ok("GET", "/atoll-admin/audit")["clean"]
        cluster.ok("POST", f"/servers/{server_id}/action", 202, json={"resize": {"flavorRef": "2"}})
        assert cluster.settle(server_id)["status"] == "VERIFY_RESIZE"
        assert cluster.ok("GET", "/atoll-admin/audit")["clean"]
    finally:
        cluster.stop()
