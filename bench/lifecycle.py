"""Benchmark: create and delete servers on 2 cells x 10 hosts with the sim driver.

Starts `atoll serve` (embedded mode) in its own process on a loopback port and
drives it over HTTP; times to ACTIVE come from each server's launched_at, so the
client's polling does not shape them.  Then runs the placement and scheduler
micro-benchmarks.  Prints a table and
writes JSON.

    python bench/lifecycle.py [--servers 200] [--clients 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

HEADERS = {"X-Auth-Token": "dev:bench:bench:admin", "OpenStack-API-Version": "compute 2.100"}
POLL_S = 0.02


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AtollProcess:
    """`atoll serve` in its own process, as an operator runs it."""

    def __init__(self, data_dir: Path, port: int, hosts_per_cell: int) -> None:
        env = {
            **os.environ,
            "ATOLL_DATA_DIR": str(data_dir),
            "ATOLL_QUOTA__INSTANCES": "1000000",
            "ATOLL_QUOTA__CORES": "1000000",
            "ATOLL_QUOTA__RAM": "1000000000",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "atoll.cli.main",
                "serve",
                "--port",
                str(port),
                "--demo-hosts",
                str(hosts_per_cell),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.base = f"http://127.0.0.1:{port}"

    def __enter__(self) -> AtollProcess:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"atoll serve exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{self.base}/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("atoll serve did not come up")

    def peak_rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def utc(stamp: str) -> float:
    parsed = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def wait_status(
    client: httpx.Client, server_id: str, status: str, timeout: float = 120
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = client.get(f"/v2.1/servers/{server_id}")
        if status == "GONE" and resp.status_code == 404:
            return {}
        if resp.status_code == 200:
            body = resp.json()["server"]
            if body["status"] == status and body["OS-EXT-STS:task_state"] is None:
                return body
            if body["status"] == "ERROR":
                raise RuntimeError(f"{server_id} went to ERROR: {body.get('fault')}")
        time.sleep(POLL_S)
    raise TimeoutError(f"{server_id} not {status} in {timeout}s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="atoll-bench-"))
    with (
        AtollProcess(tmp, free_port(), args.hosts) as atoll,
        httpx.Client(base_url=atoll.base, headers=HEADERS, timeout=120) as client,
    ):
        image = client.get(
            "/v2.1/images", headers={"OpenStack-API-Version": "compute 2.35"}
        ).json()["images"][0]["id"]

        def body(name: str) -> dict[str, Any]:
            return {
                "server": {"name": name, "imageRef": image, "flavorRef": "1", "networks": "auto"}
            }

        for i in range(5):  # warm-up
            sid = client.post("/v2.1/servers", json=body(f"warm-{i}")).json()["server"]["id"]
            wait_status(client, sid, "ACTIVE")
            client.delete(f"/v2.1/servers/{sid}")
            wait_status(client, sid, "GONE")

        # (a) one at a time: API latency, time to ACTIVE (from launched_at), delete
        create_ms, active_ms, delete_ms = [], [], []
        for i in range(args.sequential):
            t0 = time.time()
            resp = client.post("/v2.1/servers", json=body(f"seq-{i}"))
            create_ms.append((time.time() - t0) * 1000)
            resp.raise_for_status()
            sid = resp.json()["server"]["id"]
            server = wait_status(client, sid, "ACTIVE")
            active_ms.append((utc(server["OS-SRV-USG:launched_at"]) - t0) * 1000)
            t1 = time.perf_counter()
            client.delete(f"/v2.1/servers/{sid}").raise_for_status()
            wait_status(client, sid, "GONE")
            delete_ms.append((time.perf_counter() - t1) * 1000)

        # (b) throughput: N servers from several clients, then delete them all
        ids: list[str] = []
        lock = threading.Lock()

        def create(i: int) -> None:
            resp = client.post("/v2.1/servers", json=body(f"bulk-{i}"))
            resp.raise_for_status()
            with lock:
                ids.append(resp.json()["server"]["id"])

        t0 = time.time()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(create, range(args.servers)))
        while True:  # a light poll (no detail); the figures come from launched_at
            if client.get("/v2.1/servers?status=ERROR&all_tenants=1").json()["servers"]:
                raise RuntimeError("a bulk server went to ERROR")
            active = client.get("/v2.1/servers?status=ACTIVE&all_tenants=1").json()["servers"]
            if len(active) == args.servers:
                break
            time.sleep(0.2)
        listed = client.get("/v2.1/servers/detail?all_tenants=1").json()["servers"]
        create_wall = max(utc(s["OS-SRV-USG:launched_at"]) for s in listed) - t0
        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(lambda s: client.delete(f"/v2.1/servers/{s}").raise_for_status(), ids))
        while client.get("/v2.1/servers?all_tenants=1").json()["servers"]:
            time.sleep(0.1)
        delete_wall = time.perf_counter() - t0
        audit = client.get("/v2.1/atoll-admin/audit").json()
        return {
            "hosts": 2 * args.hosts,
            "sequential_servers": args.sequential,
            "create_api_ms_p50": statistics.median(create_ms),
            "create_api_ms_p95": pct(create_ms, 95),
            "time_to_active_ms_p50": statistics.median(active_ms),
            "time_to_active_ms_p95": pct(active_ms, 95),
            "delete_to_gone_ms_p50": statistics.median(delete_ms),
            "bulk_servers": args.servers,
            "bulk_clients": args.clients,
            "bulk_create_to_active_per_s": args.servers / create_wall,
            "bulk_delete_per_s": args.servers / delete_wall,
            "bulk_create_and_delete_per_s": args.servers / (create_wall + delete_wall),
            "audit_clean": audit["clean"],
            "server_peak_rss_mb": atoll.peak_rss_mb(),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=200, help="servers in the bulk phase")
    parser.add_argument(
        "--sequential", type=int, default=50, help="servers created one at a time for latency"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients")
    parser.add_argument("--hosts", type=int, default=10, help="hosts per cell (2 cells)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/lifecycle.json"))
    parser.add_argument(
        "--skip-micro",
        action="store_true",
        help="skip the placement and scheduler micro-benchmarks",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = run(args)
    if not args.skip_micro:
        sys.path.insert(0, str(Path(__file__).parent))
        results.update(micro())
    table = Table("measure", "value", title="atoll lifecycle (2 cells x 10 hosts, sim driver)")
    for key, value in results.items():
        table.add_row(key, f"{value:.2f}" if isinstance(value, float) else str(value))
    Console().print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    return 0 if results.get("audit_clean") else 1


def micro() -> dict[str, Any]:
    """Allocation write and scheduling among 1,000 hosts, from the dedicated benches."""
    import placement as placement_bench  # type: ignore[import-not-found]
    import scheduler as scheduler_bench  # type: ignore[import-not-found]

    out: dict[str, Any] = {}
    out.update({f"placement_{k}": v for k, v in placement_bench.measure().items()})
    out.update({f"scheduler_{k}": v for k, v in scheduler_bench.measure().items()})
    return out


if __name__ == "__main__":
    sys.exit(main())
