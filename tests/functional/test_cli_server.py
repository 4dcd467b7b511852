"""`atoll server ...` against a real `atoll serve` (2 cells x 1 host), run as processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from atoll.api.routers.workflows import CROSS_CELL_ONLY_STEPS, PLANNED_STEPS, planned_steps
from atoll.cli.server import _progress_of
from tests.serve_process import ATOLL, ServeProcess, free_port

ADMIN = "dev:admin:admin:admin"
ALICE = "dev:alice:demo"
MICROVERSION = "compute 2.100"


@dataclass
class Deployment:
    base: str
    data_dir: Path

    def headers(self, token: str = ADMIN, version: str = MICROVERSION) -> dict[str, str]:
        return {"X-Auth-Token": token, "OpenStack-API-Version": version}

    def get(self, path: str, token: str = ADMIN) -> httpx.Response:
        return httpx.get(f"{self.base}/v2.1{path}", headers=self.headers(token), timeout=30)

    def server(self, server_id: str, token: str = ADMIN) -> dict[str, Any]:
        resp = self.get(f"/servers/{server_id}", token)
        assert resp.status_code == 200, resp.text
        return resp.json()["server"]

    def create_server(self, name: str, token: str = ADMIN) -> str:
        images = httpx.get(
            f"{self.base}/v2.1/images",
            headers=self.headers(token, "compute 2.35"),
            timeout=30,
        ).json()["images"]
        resp = httpx.post(
            f"{self.base}/v2.1/servers",
            headers=self.headers(token),
            json={
                "server": {
                    "name": name,
                    "imageRef": images[0]["id"],
                    "flavorRef": "1",
                    "networks": "auto",
                }
            },
            timeout=30,
        )
        assert resp.status_code == 202, resp.text
        server_id = resp.json()["server"]["id"]
        deadline = time.monotonic() + 60
        while (status := self.server(server_id, token)["status"]) == "BUILD":
            assert time.monotonic() < deadline, "the server did not leave BUILD in 60 s"
            time.sleep(0.1)
        assert status == "ACTIVE", self.server(server_id, token)
        return server_id

    def cli(
        self, *args: str, token: str = ADMIN, timeout: float = 120
    ) -> subprocess.CompletedProcess:
        env = {**os.environ, "ATOLL_DATA_DIR": str(self.data_dir), "ATOLL_TOKEN": token}
        env.pop("ATOLL_URL", None)
        return subprocess.run(
            [*ATOLL, *args, "--url", self.base],
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout,
        )

    def set_faults(self, faults: dict[str, str]) -> None:
        resp = httpx.put(
            f"{self.base}/v2.1/atoll-admin/faults",
            headers=self.headers(),
            json={"faults": faults},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    data_dir = tmp_path_factory.mktemp("atoll-cli-server")
    serve = ServeProcess(data_dir).start()
    try:
        yield Deployment(base=serve.base, data_dir=data_dir)
    finally:
        serve.stop()


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_every_server_command_has_help(tmp_path: Path) -> None:
    for args in (
        ["server", "--help"],
        ["server", "resize", "--help"],
        ["server", "migrate", "--help"],
        ["server", "confirm", "--help"],
        ["server", "revert", "--help"],
        ["server", "show", "--help"],
        ["server", "list", "--help"],
    ):
        env = {**os.environ, "ATOLL_DATA_DIR": str(tmp_path)}
        out = subprocess.run([*ATOLL, *args], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "Usage" in out.stdout and len(out.stdout) > 200, args
    resize_help = subprocess.run(
        [*ATOLL, "server", "resize", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    for option in ("--flavor", "--wait", "--timeout", "--poll", "--url", "--token"):
        assert option in resize_help


def test_resize_confirm_migrate_revert_with_wait(deployment: Deployment) -> None:
    server_id = deployment.create_server("cli-moves")
    source = deployment.server(server_id)["OS-EXT-SRV-ATTR:host"]

    out = ok(deployment.cli("server", "resize", server_id, "--flavor", "2", "--wait"))
    assert "VERIFY_RESIZE" in out
    # one line per recorded step (the output is not a terminal), then the finished bar
    assert "step 10/11 move.cut_over" in out
    assert "11/11" in out
    after_resize = deployment.server(server_id)
    assert after_resize["status"] == "VERIFY_RESIZE"
    assert after_resize["flavor"]["original_name"] == "m1.small"
    resized_host = after_resize["OS-EXT-SRV-ATTR:host"]
    assert resized_host != source

    out = ok(deployment.cli("server", "confirm", server_id, "--wait"))
    assert "ACTIVE" in out and "confirm.finish" in out and "5/5" in out
    assert deployment.server(server_id)["status"] == "ACTIVE"

    out = ok(deployment.cli("server", "migrate", server_id, "--wait", "--poll", "0.1"))
    assert "VERIFY_RESIZE" in out
    migrated = deployment.server(server_id)
    assert migrated["status"] == "VERIFY_RESIZE"
    assert migrated["OS-EXT-SRV-ATTR:host"] == source
    assert migrated["flavor"]["original_name"] == "m1.small"

    out = ok(deployment.cli("server", "revert", server_id, "--wait"))
    assert "ACTIVE" in out and "revert.swap_back" in out and "6/6" in out
    reverted = deployment.server(server_id)
    assert reverted["status"] == "ACTIVE"
    assert reverted["OS-EXT-SRV-ATTR:host"] == resized_host

    shown = ok(deployment.cli("server", "show", server_id))
    assert server_id in shown and resized_host in shown and "m1.small" in shown
    assert "last migration" in shown and "reverted" in shown
    by_name = ok(deployment.cli("server", "show", "cli-moves"))
    assert server_id in by_name
    listed = ok(deployment.cli("server", "list", "--all-projects"))
    assert server_id in listed and "cli-moves" in listed and resized_host in listed


def test_without_wait_returns_at_once(deployment: Deployment) -> None:
    server_id = deployment.create_server("cli-nowait")
    out = ok(deployment.cli("server", "resize", server_id, "--flavor", "m1.small"))
    assert "accepted" in out and "req-" in out
    deadline = time.monotonic() + 60
    while deployment.server(server_id)["status"] != "VERIFY_RESIZE":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert deployment.server(server_id)["flavor"]["original_name"] == "m1.small"
    out = ok(deployment.cli("server", "confirm", server_id, "--wait"))
    assert "ACTIVE" in out


def test_api_refusals_print_the_message_and_exit_1(deployment: Deployment) -> None:
    server_id = deployment.create_server("cli-refused")
    bad = deployment.cli("server", "resize", server_id, "--flavor", "999", "--wait")
    assert bad.returncode == 1
    assert "Flavor 999 could not be found." in bad.stderr
    assert deployment.server(server_id)["status"] == "ACTIVE"

    same = deployment.cli("server", "resize", server_id, "--flavor", "1")
    assert same.returncode == 1 and "must change flavor" in same.stderr

    not_resized = deployment.cli("server", "confirm", server_id)
    assert not_resized.returncode == 1 and "vm_state" in not_resized.stderr

    unknown = deployment.cli("server", "show", "00000000-0000-0000-0000-000000000000")
    assert unknown.returncode == 1 and "could not be found" in unknown.stderr
    no_name = deployment.cli("server", "revert", "no-such-server")
    assert no_name.returncode == 1 and "no-such-server" in no_name.stderr


def test_unreachable_api_exits_2(deployment: Deployment) -> None:
    result = subprocess.run(
        [*ATOLL, "server", "list", "--url", f"http://127.0.0.1:{free_port()}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "cannot reach" in result.stderr


def test_non_admin_waits_on_a_spinner_and_sees_the_failure(deployment: Deployment) -> None:
    server_id = deployment.create_server("alice-vm", token=ALICE)

    # A non-admin may not move across cells; its cell has one host: no host fits.
    result = deployment.cli(
        "server", "resize", server_id, "--flavor", "2", "--wait", "--poll", "0.1", token=ALICE
    )
    assert result.returncode == 1, result.stdout + result.stderr
    # the spinner fallback prints the statuses it sees (no workflow steps); the failed
    # move can end within one poll, so only the settled status is certain to be seen
    assert "status ACTIVE" in result.stdout
    assert "move.schedule" not in result.stdout
    assert "resize of server" in result.stderr and "failed" in result.stderr
    assert "ACTIVE again, unchanged" in result.stderr
    assert "Error" in result.stderr  # the action's recorded result
    server = deployment.server(server_id, ALICE)
    assert server["status"] == "ACTIVE" and server["flavor"]["original_name"] == "m1.tiny"

    # an administrator sees why (and finds the server of another project by name)
    shown = ok(deployment.cli("server", "show", "alice-vm"))
    assert server_id in shown
    assert "resize error" in shown and "No valid host was found" in shown

    # the user's own view: no host
    mine = ok(deployment.cli("server", "show", server_id, token=ALICE))
    assert server_id in mine and "host1" not in mine and "host2" not in mine
    listed = ok(deployment.cli("server", "list", token=ALICE))
    assert "alice-vm" in listed and "cli-moves" not in listed

    # cold migration is admin-only by policy
    refused = deployment.cli("server", "migrate", server_id, "--wait", token=ALICE)
    assert refused.returncode == 1
    assert "os_compute_api:os-migrate-server:migrate" in refused.stderr
    others = deployment.cli("server", "list", "--all-projects", token=ALICE)
    assert others.returncode == 1 and "Policy doesn't allow" in others.stderr


def test_failed_move_reports_the_fault_and_the_step(deployment: Deployment) -> None:
    server_id = deployment.create_server("cli-fault")
    deployment.set_faults({"conductor.move.prep_dest": "raise"})
    try:
        result = deployment.cli("server", "resize", server_id, "--flavor", "2", "--wait")
    finally:
        deployment.set_faults({})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Injected fault at fault point conductor.move.prep_dest" in result.stderr
    assert "move.prep_dest (step 6 of 11) failed" in result.stderr
    assert "move.undo_prep_dest" in result.stdout  # the rollback's steps are listed
    server = deployment.server(server_id)
    assert server["flavor"]["original_name"] == "m1.tiny"


def test_workflows_endpoint(deployment: Deployment) -> None:
    unknown = deployment.get("/atoll-admin/workflows/move-nothing")
    assert unknown.status_code == 404
    assert "move-nothing" in unknown.json()["itemNotFound"]["message"]
    assert deployment.get("/atoll-admin/workflows/move-nothing", ALICE).status_code == 403

    server_id = deployment.create_server("cli-workflow")
    ok(deployment.cli("server", "resize", server_id, "--flavor", "2", "--wait"))
    migrations = deployment.get(f"/os-migrations?instance_uuid={server_id}").json()["migrations"]
    workflow_id = f"move-{migrations[0]['uuid']}"
    assert deployment.get(f"/atoll-admin/workflows/{workflow_id}", ALICE).status_code == 403

    resp = deployment.get(f"/atoll-admin/workflows/{workflow_id}")
    assert resp.status_code == 200, resp.text
    wf = resp.json()["workflow"]
    assert wf["id"] == workflow_id and wf["name"] == "move_server"
    assert wf["status"] == "SUCCESS" and wf["outcome"] == "succeeded"
    assert wf["instance_uuid"] == server_id and wf["fault"] is None
    names = [step["name"] for step in wf["steps"]]
    # two cells of one host each: the move crosses cells and runs every planned step
    assert names == PLANNED_STEPS["move_server"]
    assert set(wf["planned_steps"]) >= CROSS_CELL_ONLY_STEPS
    assert all(step["error"] is None for step in wf["steps"])

    # confirm's id carries the request id of the confirm call
    resp = httpx.post(
        f"{deployment.base}/v2.1/servers/{server_id}/action",
        headers=deployment.headers(),
        json={"confirmResize": None},
        timeout=30,
    )
    assert resp.status_code == 204, resp.text
    confirm_id = f"confirm-{migrations[0]['uuid']}-{resp.headers['x-openstack-request-id']}"
    deadline = time.monotonic() + 60
    while (wf := deployment.get(f"/atoll-admin/workflows/{confirm_id}").json()["workflow"])[
        "outcome"
    ] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert wf["name"] == "confirm_resize" and wf["outcome"] == "succeeded"
    assert [s["name"] for s in wf["steps"]] == PLANNED_STEPS["confirm_resize"]


def test_planned_steps_of_a_same_cell_move_skip_the_cell_copy() -> None:
    mv = {"source_cell_id": 1}
    scheduled = [{"name": "move.schedule", "_output": [{"cell_id": 1, "host": "h2"}]}]
    same = planned_steps("move_server", mv, scheduled)
    assert "move.copy_to_target_cell" not in same and "move.delete_snapshot" not in same
    assert len(same) == len(PLANNED_STEPS["move_server"]) - 2
    across = [{"name": "move.schedule", "_output": [{"cell_id": 2, "host": "h3"}]}]
    assert planned_steps("move_server", mv, across) == PLANNED_STEPS["move_server"]
    # before the scheduler chose, the plan is the longest one
    assert planned_steps("move_server", mv, []) == PLANNED_STEPS["move_server"]
    assert planned_steps("confirm_resize", None, []) == PLANNED_STEPS["confirm_resize"]


def test_progress_counts_planned_steps_and_names_the_next_one() -> None:
    plan = PLANNED_STEPS["revert_resize"]
    wf = {
        "outcome": "running",
        "planned_steps": plan,
        "steps": [{"name": n, "error": None} for n in plan[:2]],
    }
    assert _progress_of(wf) == (2, len(plan), plan[2])
    rolling = {**wf, "steps": [*wf["steps"], {"name": "move.undo_prep_dest", "error": None}]}
    assert _progress_of(rolling) == (2, len(plan), "rolling back: move.undo_prep_dest")
    done = {**wf, "outcome": "succeeded", "steps": [{"name": n} for n in plan]}
    assert _progress_of(done) == (len(plan), len(plan), "done")
