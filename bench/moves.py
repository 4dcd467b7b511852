"""Benchmark: resize and cold-migrate servers on 2 cells x 10 hosts with the sim driver.

Starts `atoll serve --demo-hosts 10` in its own process (twice: once with the
cross-cell weigher's multiplier negative, so that every resize leaves its cell,
once with the default, so that every resize stays in its cell) and drives it
over HTTP as the admin:

(a) one cross-cell resize of an image-backed server, POST to VERIFY_RESIZE,
    repeated (a revert or a confirm between runs; after a confirm a new server);
(b) confirm and revert latency, POST to ACTIVE;
(c) 100 servers resized across cells at once: wall time (from the migrations'
    updated_at), moves per second, then all confirmed, audit;
(d) the same within cells (plus the single-move latencies);
(e) scenario S1 end to end (create, resize, confirm, attach a volume, delete,
    archive) with its checks.

Prints a table and writes JSON.

    python bench/moves.py [--repeat 50] [--bulk 100] [--clients 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
import lifecycle  # bench/lifecycle.py: AtollProcess, wait_status, pct, utc

POLL_S = 0.005
MIB = 1024 * 1024
ADMIN_HEADERS = {"X-Auth-Token": lifecycle.HEADERS["X-Auth-Token"]}
PROJECT = lifecycle.HEADERS["X-Auth-Token"].split(":")[2]
DRAIN_ENV = "ATOLL_SCHEDULER__CROSS_CELL_WEIGHT_MULTIPLIER"


class BenchError(RuntimeError):
    """A check of the benchmark failed: the figures would not mean anything."""


def check(condition: bool, what: str) -> None:
    if not condition:
        raise BenchError(what)


@contextmanager
def atoll_serve(hosts: int, *, cross_cell: bool) -> Iterator[tuple[lifecycle.AtollProcess, Path]]:
    """`atoll serve` on 2 cells x ``hosts``; resizes leave their cell when ``cross_cell``."""
    tmp = Path(tempfile.mkdtemp(prefix="atoll-bench-moves-"))
    saved = os.environ.get(DRAIN_ENV)
    os.environ[DRAIN_ENV] = "-1000000" if cross_cell else "1000000"
    try:
        proc = lifecycle.AtollProcess(tmp, lifecycle.free_port(), hosts)
    finally:
        if saved is None:
            os.environ.pop(DRAIN_ENV, None)
        else:
            os.environ[DRAIN_ENV] = saved
    with proc as atoll:
        yield atoll, tmp


class Bench:
    """One running atoll, its layout and small helpers over its HTTP API."""

    def __init__(self, client: httpx.Client, data_dir: Path, hosts: int) -> None:
        self.client = client
        self.data_dir = data_dir
        self.not_found = 0  # GET /servers/{id} answering 404 for a server that exists
        self.cell_of = {f"host{i}": "cell1" for i in range(1, hosts + 1)}
        self.cell_of |= {f"host{i}": "cell2" for i in range(hosts + 1, 2 * hosts + 1)}
        self.image = client.get(
            "/v2.1/images", headers={"OpenStack-API-Version": "compute 2.35"}
        ).json()["images"][0]["id"]

    # -- requests ------------------------------------------------------------------------------

    def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        resp = self.client.request(method, f"/v2.1{path}", **kw)
        if resp.status_code != expect:
            raise BenchError(f"{method} {path}: {resp.status_code} {resp.text}")
        return resp.json() if resp.content else None

    def action(self, server_id: str, body: dict[str, Any], expect: int = 202) -> None:
        self.ok("POST", f"/servers/{server_id}/action", expect, json=body)

    def server(self, server_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/servers/{server_id}")["server"]

    def create(self, name: str, **extra: Any) -> str:
        body = {
            "server": {
                "name": name,
                "imageRef": self.image,
                "flavorRef": "1",
                "networks": "auto",
                **extra,
            }
        }
        return self.ok("POST", "/servers", 202, json=body)["server"]["id"]

    def wait(self, server_id: str, status: str, timeout: float = 120) -> dict[str, Any]:
        return lifecycle.wait_status(self.client, server_id, status, timeout)

    def wait_fast(self, server_id: str, status: str, timeout: float = 120) -> float:
        """Poll every few ms; the perf_counter time the server was seen in ``status``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            resp = self.client.get(f"/v2.1/servers/{server_id}")
            if resp.status_code == 404:  # seen while a move is under way: counted, reported
                self.not_found += 1
                time.sleep(POLL_S)
                continue
            if resp.status_code != 200:
                raise BenchError(f"GET /servers/{server_id}: {resp.status_code} {resp.text}")
            body = resp.json()["server"]
            if body["status"] == status and body["OS-EXT-STS:task_state"] is None:
                return time.perf_counter()
            if body["status"] == "ERROR" and body["OS-EXT-STS:task_state"] is None:
                raise BenchError(f"{server_id} went to ERROR: {body.get('fault')}")
            time.sleep(POLL_S)
        raise BenchError(f"{server_id} not {status} in {timeout}s")

    def delete(self, server_id: str) -> None:
        self.ok("DELETE", f"/servers/{server_id}", 204)
        self.wait(server_id, "GONE")

    def migrations(self, query: str) -> list[dict[str, Any]]:
        return self.ok(
            "GET",
            f"/os-migrations?{query}",
            headers={"OpenStack-API-Version": "compute 2.80"},
        )["migrations"]

    def placement(self, path: str) -> Any:
        resp = self.client.get(f"/placement{path}", headers=ADMIN_HEADERS)
        check(resp.status_code == 200, f"GET /placement{path}: {resp.status_code}")
        return resp.json()

    def allocations(self, consumer: str) -> dict[str, dict[str, int]]:
        names = {
            p["uuid"]: p["name"]
            for p in self.placement("/resource_providers")["resource_providers"]
        }
        found = self.placement(f"/allocations/{consumer}")["allocations"]
        return {names[rp]: a["resources"] for rp, a in found.items()}

    def provider_allocations(self, host: str) -> dict[str, Any]:
        (rp,) = self.placement(f"/resource_providers?name={host}")["resource_providers"]
        return self.placement(f"/resource_providers/{rp['uuid']}/allocations")["allocations"]

    def guests(self, host: str) -> set[str]:
        return {g["uuid"] for g in self.ok("GET", f"/atoll-admin/hosts/{host}/guests")["guests"]}

    def notification_mark(self) -> int:
        return len(self.ok("GET", "/atoll-admin/notifications")["notifications"])

    def notifications(self, server_id: str, since: int) -> list[str]:
        body = self.ok("GET", f"/atoll-admin/notifications?instance_uuid={server_id}&since={since}")
        return [n["event_type"] for n in body["notifications"]]

    def audit_clean(self) -> bool:
        return bool(self.ok("GET", "/atoll-admin/audit")["clean"])

    def host(self, server_id: str) -> str:
        return self.server(server_id)["OS-EXT-SRV-ATTR:host"]


def in_parallel(clients: int, fn: Callable[[str], Any], items: list[str]) -> None:
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(fn, items))


# --- (a), (b): one move at a time ---------------------------------------------------------------


def sequential(bench: Bench, repeat: int, *, cross_cell: bool) -> dict[str, list[float]]:
    """``repeat`` resizes (flavor 1 -> 2) of an image-backed server, reverted or confirmed
    in turn; a confirmed server is replaced by a new one."""
    resize_ms: list[float] = []
    confirm_ms: list[float] = []
    revert_ms: list[float] = []
    server_id = bench.create("seq-0")
    bench.wait(server_id, "ACTIVE")
    for i in range(repeat):
        source = bench.host(server_id)
        t0 = time.perf_counter()
        bench.action(server_id, {"resize": {"flavorRef": "2"}})
        resize_ms.append((bench.wait_fast(server_id, "VERIFY_RESIZE") - t0) * 1000)
        target = bench.host(server_id)
        check(
            (bench.cell_of[source] != bench.cell_of[target]) == cross_cell,
            f"resize {source} -> {target} was not {'cross' if cross_cell else 'same'}-cell",
        )
        if i % 2 == 0:
            t0 = time.perf_counter()
            bench.action(server_id, {"revertResize": None})
            revert_ms.append((bench.wait_fast(server_id, "ACTIVE") - t0) * 1000)
            check(bench.host(server_id) == source, "revert did not go back to the source")
        else:
            t0 = time.perf_counter()
            bench.action(server_id, {"confirmResize": None}, expect=204)
            confirm_ms.append((bench.wait_fast(server_id, "ACTIVE") - t0) * 1000)
            bench.delete(server_id)
            server_id = bench.create(f"seq-{i + 1}")
            bench.wait(server_id, "ACTIVE")
    bench.delete(server_id)
    return {"resize": resize_ms, "confirm": confirm_ms, "revert": revert_ms}


# --- (c), (d): many moves at once -----------------------------------------------------------------


def bulk(bench: Bench, count: int, clients: int, *, cross_cell: bool) -> dict[str, Any]:
    """``count`` servers resized at once, then all confirmed; times from the migrations."""
    ids: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        sid = bench.create(f"bulk-{i}")
        with lock:
            ids.append(sid)

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(create, range(count)))
    for sid in ids:
        bench.wait(sid, "ACTIVE")
    sources = {sid: bench.host(sid) for sid in ids}

    t0 = time.time()
    in_parallel(clients, lambda sid: bench.action(sid, {"resize": {"flavorRef": "2"}}), ids)
    deadline = time.monotonic() + 600
    while True:
        errors = bench.ok("GET", "/servers?status=ERROR&all_tenants=1")["servers"]
        check(not errors, f"{len(errors)} servers went to ERROR during the bulk resize")
        done = bench.ok("GET", "/servers?status=VERIFY_RESIZE&all_tenants=1")["servers"]
        if len(done) == count:
            break
        check(time.monotonic() < deadline, f"only {len(done)}/{count} resized in 600 s")
        time.sleep(0.1)
    listed = bench.migrations("migration_type=resize&status=finished")
    finished = [m for m in listed if m["instance_uuid"] in sources]
    check(len(finished) == count, f"{len(finished)} finished migrations for {count} servers")
    resize_wall = max(lifecycle.utc(m["updated_at"]) for m in finished) - t0
    cell = bench.cell_of
    crossed = sum(1 for m in finished if cell[m["source_compute"]] != cell[m["dest_compute"]])
    check(
        crossed == (count if cross_cell else 0),
        f"{crossed}/{count} moves crossed cells (expected {'all' if cross_cell else 'none'})",
    )
    audit_resized = bench.audit_clean()

    t0 = time.perf_counter()
    in_parallel(clients, lambda sid: bench.action(sid, {"confirmResize": None}, expect=204), ids)
    while len(bench.ok("GET", "/servers?status=ACTIVE&all_tenants=1")["servers"]) < count:
        time.sleep(0.05)
    confirm_wall = time.perf_counter() - t0
    audit_confirmed = bench.audit_clean()
    in_parallel(clients, bench.delete, ids)
    return {
        "servers": count,
        "resize_wall_s": resize_wall,
        "moves_per_s": count / resize_wall,
        "confirm_wall_s": confirm_wall,
        "confirms_per_s": count / confirm_wall,
        "audit_clean": audit_resized and audit_confirmed and bench.audit_clean(),
    }


# --- (e): scenario S1 end to end ----------------------------------------------------------------


def scenario_s1(bench: Bench) -> dict[str, float]:
    """Create, resize across cells, confirm, attach a volume, delete, archive: S1's checks."""
    from atoll.config import load_settings
    from atoll.services.network import NetworkService
    from atoll.services.volume import VolumeService

    settings = load_settings(None, data_dir=bench.data_dir)
    networks = NetworkService(settings.services_db)
    volumes = VolumeService(settings.services_db)
    network = networks.list_networks()[0]["id"]
    steps: dict[str, float] = {}
    t_all = time.perf_counter()

    # setup (not timed): a tagged port, a key pair, a data volume
    port = networks.create_port(network, project_id=PROJECT)["id"]
    data = volumes.create(1, project_id=PROJECT, name="s1-data")["id"]
    bench.ok(
        "POST",
        "/os-keypairs",
        201,
        json={"keypair": {"name": f"s1-{port[:8]}"}},
        headers={"OpenStack-API-Version": "compute 2.91"},
    )
    setup = time.perf_counter() - t_all

    t0 = time.perf_counter()
    sid = bench.create(
        "s1",
        networks=[{"port": port, "tag": "private"}],
        tags=["test"],
        metadata={"scenario": "s1"},
        key_name=f"s1-{port[:8]}",
    )
    bench.wait(sid, "ACTIVE")
    steps["create_s"] = time.perf_counter() - t0
    source = bench.host(sid)
    disk = bench.ok("GET", f"/atoll-admin/hosts/{source}/guests/{sid}")["guest"]["root_disk_path"]
    marker = f"bench-marker-{sid}".encode()
    with open(disk, "r+b") as fh:
        fh.seek(MIB)
        fh.write(marker)
        fh.flush()

    t0 = time.perf_counter()
    bench.action(sid, {"resize": {"flavorRef": "2"}})
    bench.wait(sid, "VERIFY_RESIZE")
    steps["resize_s"] = time.perf_counter() - t0
    target = bench.host(sid)
    check(bench.cell_of[target] != bench.cell_of[source], "S1: the resize stayed in its cell")
    (mig,) = bench.migrations(f"instance_uuid={sid}")
    check(mig["status"] == "finished", f"S1: migration {mig['status']}")
    check(
        bench.allocations(mig["uuid"]) == {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}},
        "S1: the source does not hold the old flavor against the migration",
    )
    check(
        bench.allocations(sid) == {target: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}},
        "S1: the target does not hold the new flavor against the server",
    )
    shown = bench.server(sid)
    check(shown["tags"] == ["test"] and shown["metadata"] == {"scenario": "s1"}, "S1: tags")
    disk = bench.ok("GET", f"/atoll-admin/hosts/{target}/guests/{sid}")["guest"]["root_disk_path"]
    with open(disk, "rb") as fh:
        fh.seek(MIB)
        check(fh.read(len(marker)) == marker, "S1: the root disk's content was not preserved")

    since = bench.notification_mark()
    t0 = time.perf_counter()
    bench.action(sid, {"confirmResize": None}, expect=204)
    bench.wait(sid, "ACTIVE")
    steps["confirm_s"] = time.perf_counter() - t0
    (mig,) = bench.migrations(f"instance_uuid={sid}")
    check(mig["status"] == "confirmed", f"S1: migration {mig['status']} after confirm")
    check(bench.provider_allocations(source) == {}, "S1: the source still has allocations")
    check(sid not in bench.guests(source) and sid in bench.guests(target), "S1: guests")
    check(
        bench.notifications(sid, since)
        == ["instance.resize_confirm.start", "instance.resize_confirm.end"],
        f"S1: confirm notifications {bench.notifications(sid, since)}",
    )

    t0 = time.perf_counter()
    bench.ok(
        "POST",
        f"/servers/{sid}/os-volume_attachments",
        200,
        json={"volumeAttachment": {"volumeId": data}},
    )
    while volumes.get(data)["status"] != "in-use":
        time.sleep(POLL_S)
    steps["attach_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    bench.delete(sid)
    steps["delete_s"] = time.perf_counter() - t0
    check(bench.allocations(sid) == {}, "S1: allocations left after delete")
    check(
        bench.ok("GET", f"/atoll-admin/volume-attachments?instance_uuid={sid}")["attachments"]
        == [],
        "S1: volume attachments left after delete",
    )
    for cell in ("cell1", "cell2"):
        rows = bench.ok("GET", f"/atoll-admin/cells/{cell}/instances/{sid}")["instances"]
        check(all(r["deleted"] for r in rows), f"S1: a live copy left in {cell}")

    t0 = time.perf_counter()
    env = {**os.environ, "ATOLL_DATA_DIR": str(bench.data_dir), "COLUMNS": "200"}
    out = subprocess.run(
        [sys.executable, "-m", "atoll.cli.main", "db", "archive", "--until-complete"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    steps["archive_s"] = time.perf_counter() - t0
    check(out.returncode == 0, f"S1: archive failed: {out.stdout}{out.stderr}")
    moved = re.findall(r"\bcell\d+\s*\W\s*instances\s*\W\s*(\d+)", out.stdout)
    check(sum(map(int, moved)) >= 1, f"S1: archive moved no instance: {out.stdout}")
    check(bench.audit_clean(), "S1: audit not clean")
    steps["end_to_end_s"] = time.perf_counter() - t_all - setup
    return steps


# --- main ---------------------------------------------------------------------------------------


def stats(prefix: str, values: list[float]) -> dict[str, float]:
    return {
        f"{prefix}_p50": statistics.median(values),
        f"{prefix}_p95": lifecycle.pct(values, 95),
        f"{prefix}_n": len(values),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {"hosts": 2 * args.hosts}
    with (
        atoll_serve(args.hosts, cross_cell=True) as (atoll, data_dir),
        httpx.Client(base_url=atoll.base, headers=lifecycle.HEADERS, timeout=120) as client,
    ):
        bench = Bench(client, data_dir, args.hosts)
        for i in range(3):  # warm-up
            sid = bench.create(f"warm-{i}")
            bench.wait(sid, "ACTIVE")
            bench.delete(sid)
        seq = sequential(bench, args.repeat, cross_cell=True)
        results |= stats("cross_cell_resize_ms", seq["resize"])
        results |= stats("cross_cell_confirm_ms", seq["confirm"])
        results |= stats("cross_cell_revert_ms", seq["revert"])
        many = bulk(bench, args.bulk, args.clients, cross_cell=True)
        results |= {f"cross_cell_bulk_{k}": v for k, v in many.items()}
        results |= {f"s1_{k}": v for k, v in scenario_s1(bench).items()}
        results["cross_cell_audit_clean"] = bench.audit_clean()
        results["cross_cell_transient_404s"] = bench.not_found
        results["cross_cell_server_peak_rss_mb"] = atoll.peak_rss_mb()

    with (
        atoll_serve(args.hosts, cross_cell=False) as (atoll, data_dir),
        httpx.Client(base_url=atoll.base, headers=lifecycle.HEADERS, timeout=120) as client,
    ):
        bench = Bench(client, data_dir, args.hosts)
        seq = sequential(bench, args.same_cell_repeat, cross_cell=False)
        results |= stats("same_cell_resize_ms", seq["resize"])
        results |= stats("same_cell_confirm_ms", seq["confirm"])
        results |= stats("same_cell_revert_ms", seq["revert"])
        many = bulk(bench, args.bulk, args.clients, cross_cell=False)
        results |= {f"same_cell_bulk_{k}": v for k, v in many.items()}
        results["same_cell_audit_clean"] = bench.audit_clean()
        results["same_cell_transient_404s"] = bench.not_found

    results["audit_clean"] = all(v for k, v in results.items() if k.endswith("audit_clean"))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50, help="cross-cell resizes one at a time")
    parser.add_argument(
        "--same-cell-repeat", type=int, default=20, help="same-cell resizes one at a time"
    )
    parser.add_argument("--bulk", type=int, default=100, help="servers resized at once")
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    parser.add_argument("--hosts", type=int, default=10, help="hosts per cell (2 cells)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/moves.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = run(args)
    table = Table("measure", "value", title=f"atoll moves (2 cells x {args.hosts} hosts)")
    for key, value in results.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0 if results["audit_clean"] else 1


if __name__ == "__main__":
    sys.exit(main())
