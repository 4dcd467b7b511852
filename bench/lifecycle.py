"""Benchmark: create and delete servers on 2 cells x 10 hosts with the sim driver.

Runs a real embedded atoll behind uvicorn on a loopback port and drives it over
HTTP, then runs the placement and scheduler micro-benchmarks.  Prints a table and
writes JSON.

    python bench/lifecycle.py [--servers 200] [--clients 8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import socket
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from atoll.config import load_settings
from atoll.embedded import Embedded

HEADERS = {"X-Auth-Token": "dev:bench:bench:admin", "OpenStack-API-Version": "compute 2.100"}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, app: Any, port: int) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def wait_status(client: httpx.Client, server_id: str, status: str, timeout: float = 60) -> float:
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        resp = client.get(f"/v2.1/servers/{server_id}")
        if status == "GONE" and resp.status_code == 404:
            return time.perf_counter()
        if resp.status_code == 200:
            body = resp.json()["server"]
            if body["status"] == status and body["OS-EXT-STS:task_state"] is None:
                return time.perf_counter()
            if body["status"] == "ERROR":
                raise RuntimeError(f"{server_id} went to ERROR: {body.get('fault')}")
        time.sleep(0.002)
    raise TimeoutError(f"{server_id} not {status} in {timeout}s")


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="atoll-bench-"))
    settings = load_settings(
        None,
        data_dir=tmp,
        report_interval=3600.0,
        quota={"instances": 100000, "cores": 1000000, "ram": 10**9},
    )
    cells = {f"cell{c}": [f"c{c}-host{h}" for h in range(1, 11)] for c in (1, 2)}
    embedded = Embedded(settings, cells=cells).start()
    port = free_port()
    results: dict[str, Any] = {}
    try:
        with (
            Server(embedded.app(), port),
            httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=60
            ) as client,
        ):
            image, network = embedded.demo_info["image_id"], embedded.demo_info["network_id"]

            def body(name: str) -> dict[str, Any]:
                return {
                    "server": {
                        "name": name,
                        "imageRef": image,
                        "flavorRef": "1",
                        "networks": [{"uuid": network}],
                    }
                }

            # (a) one at a time: API latency and time to ACTIVE
            create_ms, active_ms, delete_ms = [], [], []
            for i in range(args.sequential):
                t0 = time.perf_counter()
                resp = client.post("/v2.1/servers", json=body(f"seq-{i}"))
                t1 = time.perf_counter()
                resp.raise_for_status()
                sid = resp.json()["server"]["id"]
                t2 = wait_status(client, sid, "ACTIVE")
                create_ms.append((t1 - t0) * 1000)
                active_ms.append((t2 - t0) * 1000)
                t3 = time.perf_counter()
                client.delete(f"/v2.1/servers/{sid}").raise_for_status()
                wait_status(client, sid, "GONE")
                delete_ms.append((time.perf_counter() - t3) * 1000)

            # (b) throughput: N servers from several clients, then delete them all
            ids: list[str] = []
            lock = threading.Lock()

            def create(i: int) -> None:
                resp = client.post("/v2.1/servers", json=body(f"bulk-{i}"))
                resp.raise_for_status()
                with lock:
                    ids.append(resp.json()["server"]["id"])

            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(create, range(args.servers)))
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(lambda s: wait_status(client, s, "ACTIVE", 300), ids))
            create_wall = time.perf_counter() - t0
            t0 = time.perf_counter()
            with ThreadPoolExecutor(args.clients) as pool:
                list(
                    pool.map(lambda s: client.delete(f"/v2.1/servers/{s}").raise_for_status(), ids)
                )
            with ThreadPoolExecutor(args.clients) as pool:
                list(pool.map(lambda s: wait_status(client, s, "GONE", 300), ids))
            delete_wall = time.perf_counter() - t0
            audit = client.get("/v2.1/atoll-admin/audit").json()
        results = {
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
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        }
    finally:
        embedded.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=200, help="servers in the bulk phase")
    parser.add_argument(
        "--sequential", type=int, default=50, help="servers created one at a time for latency"
    )
    parser.add_argument("--clients", type=int, default=8, help="concurrent API clients")
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
