"""The `atoll` command, run as a real process."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.serve_process import ATOLL, ServeProcess


def run(*args: str, data_dir: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATOLL_DATA_DIR": str(data_dir)}
    result = subprocess.run([*ATOLL, *args], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def test_every_command_has_help(tmp_path: Path) -> None:
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["db", "--help"],
        ["db", "sync", "--help"],
        ["cell", "create", "--help"],
        ["host", "add", "--help"],
        ["faults", "list", "--help"],
        ["audit", "--help"],
    ):
        out = run(*args, data_dir=tmp_path).stdout
        assert "Usage" in out and len(out) > 100, args


def test_db_sync_cells_and_hosts(tmp_path: Path) -> None:
    assert "databases up to date" in run("db", "sync", data_dir=tmp_path).stdout
    assert "created cell east" in run("cell", "create", "east", data_dir=tmp_path).stdout
    dup = run("cell", "create", "east", data_dir=tmp_path, check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    run("host", "add", "east-1", "--cell", "east", data_dir=tmp_path)
    clash = run("host", "add", "east-1", "--cell", "cell0", data_dir=tmp_path, check=False)
    assert clash.returncode == 1
    assert "east-1" in run("host", "list", data_dir=tmp_path).stdout
    listed = run("cell", "list", data_dir=tmp_path).stdout
    assert "east" in listed and "cell0" in listed


def test_faults_list_names_points(tmp_path: Path) -> None:
    out = run("faults", "list", data_dir=tmp_path).stdout
    for point in ("virt.sim.spawn", "conductor.build.spawn", "rpc.spawn.reply", "compute.destroy"):
        assert point in out


def test_serve_starts_the_demo_and_audit_is_clean(tmp_path: Path) -> None:
    serve = ServeProcess(tmp_path, demo_hosts=2).start()
    try:
        headers = {"X-Auth-Token": "dev:admin:admin:admin"}
        flavors = httpx.get(f"{serve.base}/v2.1/flavors", headers=headers).json()["flavors"]
        assert len(flavors) == 3
        hypervisors = httpx.get(f"{serve.base}/v2.1/os-hypervisors", headers=headers).json()
        assert len(hypervisors["hypervisors"]) == 4
        audit = run("audit", "--url", serve.base, data_dir=tmp_path)
        assert "clean" in audit.stdout.lower()
    finally:
        serve.stop()
