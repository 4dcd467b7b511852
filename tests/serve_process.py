"""`atoll serve` as a real process for tests: start it on a free port, wait until it
answers, stop (or find it killed) — the one way tests run the real command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ATOLL = [sys.executable, "-m", "atoll.cli.main"]
START_TIMEOUT_S = 60.0


def wait_settled(
    fetch: Callable[[], dict[str, Any]], timeout: float, poll: float = 0.05
) -> dict[str, Any]:
    """Poll a server (``fetch`` returns its API view) until no task runs on it and it
    is out of BUILD; the one settle loop the process-level fault tests share."""
    deadline = time.monotonic() + timeout
    server: dict[str, Any] = {}
    while time.monotonic() < deadline:
        server = fetch()
        if server["OS-EXT-STS:task_state"] is None and server["status"] != "BUILD":
            return server
        time.sleep(poll)
    raise AssertionError(f"{server.get('id')} did not settle: {server.get('status')}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    def __init__(self, data_dir: Path, *, demo_hosts: int = 1, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.demo_hosts = demo_hosts
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.data_dir / "serve.log"

    def start(self) -> ServeProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ATOLL_DATA_DIR": str(self.data_dir)}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    *ATOLL,
                    "serve",
                    "--port",
                    str(self.port),
                    "--demo-hosts",
                    str(self.demo_hosts),
                    "--log-level",
                    "warning",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"atoll serve exited {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.base}/", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"atoll serve did not answer in {START_TIMEOUT_S:.0f} s")

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
