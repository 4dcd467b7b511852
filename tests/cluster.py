"""A distributed atoll for tests: `atoll api`, `atoll conductor` and one `atoll
compute` per host, each a real process, on SQLite files under one directory and a
RabbitMQ virtual host of its own (created with rabbitmqctl, deleted afterwards).

Faults are given to a process when it starts (``ATOLL_FAULTS``), so a test can
start a conductor that will SIGKILL itself at a chosen step, wait for it to die,
and start it again without the fault.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.serve_process import ATOLL, free_port, wait_settled

ADMIN = {"X-Auth-Token": "dev:admin:admin:admin", "OpenStack-API-Version": "compute 2.100"}
RABBIT = "amqp://guest:guest@127.0.0.1:5672/"


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


class Cluster:
    def __init__(
        self,
        root: Path,
        *,
        cells: int = 2,
        hosts: int = 1,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.cells = cells
        self.hosts = hosts
        self.vhost = f"atoll-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "ATOLL_DATA_DIR": str(root),
            "ATOLL_TRANSPORT_URL": f"{RABBIT}{self.vhost}",
            "ATOLL_TIMEOUTS__RPC_CALL": "2",
            "ATOLL_TIMEOUTS__RPC_RETRIES": "2",
            "ATOLL_TIMEOUTS__WORKFLOW_STEP": "2",
            "ATOLL_TIMEOUTS__CONDUCTOR_HEARTBEAT": "0.5",
            "ATOLL_TIMEOUTS__CONDUCTOR_TAKEOVER": "3",
            "ATOLL_TIMEOUTS__SERVICE_DOWN_AFTER": "30",
            "ATOLL_REPORT_INTERVAL": "2",
            "ATOLL_PERIODIC_INTERVAL": "1",
            **(settings or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ processes

    def host_names(self) -> dict[str, str]:
        return {
            f"host{(c - 1) * self.hosts + h}": f"cell{c}"
            for c in range(1, self.cells + 1)
            for h in range(1, self.hosts + 1)
        }

    def start(self) -> Cluster:
        self.root.mkdir(parents=True, exist_ok=True)
        _rabbitmqctl("add_vhost", self.vhost)
        _rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        subprocess.run(
            [*ATOLL, "db", "sync", "--demo", "--demo-cells", str(self.cells), "--demo-hosts",
             str(self.hosts)],
            env=self.env, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        self.start_conductor("conductor-a")
        for host in self.host_names():
            self.start_compute(host)
        self.spawn("api", ["api", "--port", str(self.port)])
        self.wait_until(self._api_up, 60, "the API did not answer")
        self.wait_until(self._computes_up, 60, "not every compute reported")
        return self

    def spawn(self, name: str, args: list[str], faults: dict[str, str] | None = None) -> None:
        env = dict(self.env)
        if faults:
            env["ATOLL_FAULTS"] = json.dumps(faults)
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
        self.procs[name] = subprocess.Popen(
            [*ATOLL, *args, "--log-level", "info"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()

    def start_conductor(self, name: str, faults: dict[str, str] | None = None) -> None:
        self.spawn(name, ["conductor", "--name", name], faults)

    def start_compute(self, host: str, faults: dict[str, str] | None = None) -> None:
        self.spawn(host, ["compute", "--host", host, "--cell", self.host_names()[host]], faults)

    def wait_exit(self, name: str, timeout: float = 60) -> int:
        return self.procs[name].wait(timeout=timeout)

    def alive(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is None

    def stop_process(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_process(name)
        with contextlib.suppress(subprocess.SubprocessError):
            _rabbitmqctl("delete_vhost", self.vhost)

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ API

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**ADMIN, **kw.pop("headers", {})}
        return httpx.request(method, f"{self.base}/v2.1{path}", headers=headers, timeout=60, **kw)

    def ok(self, method: str, path: str, expect: int = 200, **kw: Any) -> Any:
        resp = self.api(method, path, **kw)
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def _api_up(self) -> bool:
        try:
            return httpx.get(f"{self.base}/", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _computes_up(self) -> bool:
        services = self.ok("GET", "/os-services?binary=nova-compute")["services"]
        return sum(s["state"] == "up" for s in services) >= len(self.host_names())

    @staticmethod
    def wait_until(check: Any, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            time.sleep(0.1)
        raise AssertionError(message)

    def server(self, server_id: str) -> dict[str, Any]:
        return self.ok("GET", f"/servers/{server_id}")["server"]

    def settle(self, server_id: str, timeout: float = 90) -> dict[str, Any]:
        return wait_settled(lambda: self.server(server_id), timeout, poll=0.1)

    def image_id(self) -> str:
        images = self.ok("GET", "/images", headers={"OpenStack-API-Version": "compute 2.35"})
        return images["images"][0]["id"]
