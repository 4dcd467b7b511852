"""A property-based stateful test: random server lifecycles with random faults.

A hypothesis ``RuleBasedStateMachine`` drives a real embedded atoll (the demo
layout: ``cell1`` with ``host1``/``host2``, ``cell2`` with ``host3``/``host4``)
only through its HTTP API, as the admin.  Each example builds a fresh atoll
(cross-cell moves are either avoided or forced for the whole example through the
scheduler's cross-cell weigher; a cold migrate may also name any host) and then
runs a random sequence of create (image- or volume-backed), stop, start, hard
reboot, resize, cold migrate, confirmResize, revertResize and delete.  Each
operation may come with one fault injected for its duration (``raise``,
``hang`` longer than the RPC timeout, ``drop_reply``, ``duplicate_reply``; always
fires-once, ``*1``, and cleared at the end of the rule).

After every rule the test waits for the workflow it started (which must end in
SUCCESS: a workflow handles its failures, it never lets an exception escape) and
for every server to settle (no task, not BUILD), lets any hung call wake up, and
then checks (``invariants_hold``):

* ``GET /atoll-admin/audit`` is clean;
* every server the test did not delete is still there (never a 404), listed
  once, in ACTIVE, SHUTOFF, VERIFY_RESIZE or ERROR (ERROR only after a fault
  that fired), with the power state its status implies.

Each rule also checks its own outcome against a model: an operation the API
refuses gets a 4xx (never a 5xx) and changes nothing; when no fault fired the
operation did exactly what it should (resize -> VERIFY_RESIZE on another host
with the new flavor, confirm -> the new host, revert -> the old host and
flavor, delete -> 404, hard reboot -> ACTIVE, ...); when a fault fired the
server ends either as if it had not, or in the operation's documented failure
state (a move rolls back to its source host and old flavor, in ERROR, and a
hard reboot brings it back).  Whether a fault fired is read from the WARNING
atoll.faults logs as it fires.  At the end of an example every server is
deleted and the deployment must be empty (no usage, no guest) and clean.

Scale with ``ATOLL_HYPOTHESIS_EXAMPLES`` (default 8 examples of 8 steps); the
summary line is printed, written under the test's tmp dir and appended to the
file named by ``ATOLL_HYPOTHESIS_REPORT`` if set.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from tests.faults.matrix import RESULTS
from tests.harness import Api, Atoll, running_atoll

# --- sizes and timeouts ----------------------------------------------------------------------

EXAMPLES = int(os.environ.get("ATOLL_HYPOTHESIS_EXAMPLES", "8"))
STEPS = int(os.environ.get("ATOLL_HYPOTHESIS_STEPS", "8"))
MAX_SERVERS = 8  # within the admin project's quota (10 instances, 20 cores)
RPC_TIMEOUT = 1.5  # timeouts.rpc_call and timeouts.workflow_step of every atoll built here
HANG = RPC_TIMEOUT + 0.5  # a hang just longer than an RPC or a conductor step may wait
SETTLE_TIMEOUT = 60.0  # for a workflow to finish
SETTLED_AFTER = 15.0  # for the servers to show it once it has finished
POLL = 0.02

HOSTS = ["host1", "host2", "host3", "host4"]  # the demo layout: 2 cells x 2 hosts
FLAVOR_IDS = ["1", "2", "3"]
FLAVOR_NAMES = {"1": "m1.tiny", "2": "m1.small", "3": "m1.medium"}
FLAVOR_BY_NAME = {name: fid for fid, name in FLAVOR_NAMES.items()}
ROOT_GB = {"1": 1, "2": 20, "3": 40}
RUNNING, SHUTDOWN = 1, 4
ALLOWED = {"ACTIVE", "SHUTOFF", "VERIFY_RESIZE", "ERROR"}
ANY = object()  # no expectation on the host

# --- faults ----------------------------------------------------------------------------------

BUILD_POINTS = [
    "conductor.build.schedule",
    "conductor.build.create_in_cell",
    "conductor.build.bind",
    "conductor.build.spawn",
    "conductor.build.activate",
    "compute.spawn",
    "virt.sim.spawn",
    "rpc.spawn.reply",
]
MOVE_POINTS = [
    "conductor.move.allocations",
    "conductor.move.schedule",
    "conductor.move.copy_to_target",
    "conductor.move.prep_dest",
    "conductor.move.prep_source",
    "conductor.move.finish_dest",
    "conductor.move.cut_over",
    "compute.prepare_guest",
    "compute.stash_guest",
    "compute.spawn",
    "compute.prep_resize",
    "compute.resize_instance",
    "compute.finish_resize",
    "compute.prep_snapshot_based_resize_at_dest",
    "compute.prep_snapshot_based_resize_at_source",
    "compute.finish_snapshot_based_resize_at_dest",
    "virt.sim.power_off",
    "virt.sim.snapshot",
    "virt.sim.destroy",
    "virt.sim.spawn",
    "rpc.prepare_guest.reply",
    "rpc.stash_guest.reply",
    "rpc.spawn.reply",
]
FAULT_POINTS: dict[str, list[str]] = {
    "create": BUILD_POINTS,
    "stop": [
        "conductor.power.stop",
        "compute.power_off",
        "virt.sim.power_off",
        "rpc.power_off.reply",
    ],
    "start": [
        "conductor.power.start",
        "compute.power_on",
        "virt.sim.power_on",
        "rpc.power_on.reply",
    ],
    "reboot": [
        "conductor.power.reboot",
        "compute.reboot",
        "virt.sim.reboot",
        "virt.sim.spawn",
        "rpc.reboot.reply",
    ],
    "resize": MOVE_POINTS,
    "migrate": MOVE_POINTS,
    "confirm": [
        "conductor.move.confirm",
        "compute.delete_kept_disks",
        "compute.confirm_resize",
        "compute.confirm_snapshot_based_resize_at_source",
        "virt.sim.delete_kept_disks",
        "rpc.delete_kept_disks.reply",
    ],
    "revert": [
        "conductor.move.revert",
        "compute.destroy",
        "compute.restore_guest",
        "compute.revert_resize",
        "compute.revert_snapshot_based_resize_at_dest",
        "compute.finish_revert_snapshot_based_resize_at_source",
        "virt.sim.destroy",
        "virt.sim.spawn",
        "virt.sim.power_on",
        "rpc.destroy.reply",
        "rpc.restore_guest.reply",
    ],
    "delete": [
        "conductor.delete.destroy_guest",
        "conductor.delete.release_networks",
        "conductor.delete.release_volumes",
        "conductor.delete.release_allocations",
        "conductor.delete.soft_delete",
        "compute.destroy",
        "compute.delete_kept_disks",
        "virt.sim.destroy",
        "rpc.destroy.reply",
    ],
}


@dataclass(frozen=True)
class Fault:
    """One fault for one operation: a point and what happens there (always ``*1``)."""

    point: str
    kind: str  # raise | hang | drop_reply | duplicate_reply

    def action(self, instance: str | None) -> str:
        text = {"hang": f"hang:{HANG}"}.get(self.kind, self.kind) + "*1"
        # aim at the operation's server where the point knows it (rpc replies do not)
        if instance and not self.point.startswith("rpc."):
            text += f";instance={instance}"
        return text


KINDS = ["raise", "hang", "drop_reply", "duplicate_reply"]  # "kill" would kill this test


def faults_for(op: str) -> st.SearchStrategy[Fault | None]:
    """No fault, or one at a point the operation passes (every kind means something at
    every point: a conductor step, a compute method or the simulated hypervisor under
    it loses or doubles its result or the RPC reply)."""
    return st.none() | st.builds(Fault, st.sampled_from(FAULT_POINTS[op]), st.sampled_from(KINDS))


class FaultLog(logging.Handler):
    """Every fault that fires is logged as a WARNING by atoll.faults: note which and when."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.fired_lock = threading.Lock()
        self.fired: list[tuple[str, float]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("fault point ") and record.args:
            with self.fired_lock:
                self.fired.append((str(record.args[0]), time.monotonic()))

    def since(self, mark: int) -> list[tuple[str, float]]:
        with self.fired_lock:
            return list(self.fired[mark:])

    def mark(self) -> int:
        with self.fired_lock:
            return len(self.fired)


# --- the model -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerRef:
    """What the bundle holds: a handle the printed examples can name."""

    name: str

    def __repr__(self) -> str:
        return self.name


@dataclass
class Move:
    migration: str
    source_host: str
    old_flavor: str
    new_flavor: str
    running: bool


@dataclass
class Server:
    ref: ServerRef
    id: str
    volume_backed: bool
    status: str
    host: str | None
    flavor: str
    running: bool = True
    move: Move | None = None
    migrations: set[str] = field(default_factory=set)
    delete_failed: bool = False  # a failed delete: only deleting again is promised to work


@dataclass
class Stats:
    examples: int = 0
    steps: int = 0
    faults_injected: int = 0
    faults_fired: int = 0
    refused: int = 0
    ops: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)

    def outcome(self, op: str, how: str) -> None:
        key = f"{op} {how}"
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def summary(self) -> str:
        return (
            f"hypothesis stateful: {self.examples} examples, {self.steps} steps, "
            f"{self.faults_injected} faults injected ({self.faults_fired} fired), "
            f"{self.refused} requests refused with 4xx, all invariants held"
        )


@dataclass
class Outcome:
    """What one operation did, as seen after it settled."""

    code: int
    fired: list[str]
    shown: dict[str, Any] | None  # None: the server is gone (404)


def tracked(fn):  # type: ignore[no-untyped-def]
    """Mark the machine broken while a rule or invariant runs; teardown only checks the
    final clean-up when the last one finished normally."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self.healthy = False
        result = fn(self, *args, **kwargs)
        self.healthy = True
        return result

    return wrapper


class AtollLifecycle(RuleBasedStateMachine):
    servers = Bundle("servers")

    def __init__(self, tmp: Path, stats: Stats, fault_log: FaultLog) -> None:
        super().__init__()
        self.tmp = tmp
        self.stats = stats
        self.fault_log = fault_log
        self.stack = ExitStack()
        self.atoll: Atoll | None = None
        self.model: dict[ServerRef, Server] = {}
        self.counter = 0
        self.healthy = True
        self.last_workflow: dict[str, Any] = {}
        stats.examples += 1
        self.example = stats.examples

    # --- plumbing --------------------------------------------------------------------------

    @property
    def api(self) -> Api:
        assert self.atoll is not None
        return self.atoll.admin

    def set_faults(self, spec: dict[str, str]) -> None:
        self.api.ok("PUT", "/atoll-admin/faults", 200, json={"faults": spec})

    def show(self, server_id: str) -> dict[str, Any] | None:
        resp = self.api.get(f"/servers/{server_id}")
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, f"GET server {server_id}: {resp.status_code} {resp.text}"
        return resp.json()["server"]

    def wait_workflow(self, workflow_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            resp = self.api.get(f"/atoll-admin/workflows/{workflow_id}")
            assert resp.status_code == 200, f"workflow {workflow_id}: {resp.text}"
            last = resp.json()["workflow"]
            if last["outcome"] != "running":
                self.last_workflow = last
                return last
            time.sleep(POLL)
        raise AssertionError(
            f"workflow {workflow_id} still running after {SETTLE_TIMEOUT}s: "
            f"steps {[s['name'] for s in last.get('steps', [])]}"
        )

    def settle(self, server_id: str, timeout: float = SETTLED_AFTER) -> dict[str, Any] | None:
        """Wait for no task and a status other than BUILD; None once the server is gone.
        (Called once the workflow that changes it has finished: it has no reason to wait.)"""
        deadline = time.monotonic() + timeout
        shown: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            shown = self.show(server_id)
            if shown is None:
                return None
            if shown["OS-EXT-STS:task_state"] is None and shown["status"] != "BUILD":
                return shown
            time.sleep(POLL)
        assert shown is not None
        workflow = self.last_workflow
        raise AssertionError(
            f"server {server_id} did not settle in {timeout}s: status {shown['status']}, "
            f"task_state {shown['OS-EXT-STS:task_state']}, fault {shown.get('fault')}; the "
            f"last workflow, {workflow.get('id')}, ended {workflow.get('status')} "
            f"({workflow.get('outcome')}): {workflow.get('error') or workflow.get('result')}"
        )

    def settle_all(self) -> None:
        for server in self.model.values():
            shown = self.settle(server.id)
            assert shown is not None, f"server {server.ref} ({server.id}) was lost (404)"

    def migration_ids(self, server_id: str) -> list[str]:
        body = self.api.ok("GET", f"/os-migrations?instance_uuid={server_id}", version="2.80")
        return [m["uuid"] for m in body["migrations"]]

    def run(
        self,
        op: str,
        server: Server | None,
        fault: Fault | None,
        send,  # type: ignore[no-untyped-def]
        workflow_id,  # type: ignore[no-untyped-def]
    ) -> tuple[Any, Outcome]:
        """Inject ``fault``, send the request, wait for its workflow and every server to
        settle (and any hung thread to wake up), clear the faults; what happened."""
        self.stats.steps += 1
        self.stats.ops[op] = self.stats.ops.get(op, 0) + 1
        mark = self.fault_log.mark()
        self.last_workflow = {}
        if fault is not None:
            self.set_faults({fault.point: fault.action(server.id if server else None)})
            self.stats.faults_injected += 1
        try:
            resp = send()
            assert resp.status_code < 500, (
                f"{op} of {server.ref if server else 'a new server'}: "
                f"{resp.status_code} {resp.text}"
            )
            if resp.status_code < 300:
                wf = self.wait_workflow(workflow_id(resp))
                # a workflow handles its failures (rolls back, records a fault, returns
                # "error"); one that raised left nobody to say what became of its server
                assert wf["status"] == "SUCCESS", (
                    f"{op} of {server.ref if server else 'a new server'} (fault {fault}, fired "
                    f"{[p for p, _ in self.fault_log.since(mark)]}): workflow {wf['id']} ended "
                    f"{wf['status']}: {wf['error']}; steps "
                    f"{[(s['name'], s['error']) for s in wf['steps']]}"
                )
            else:
                self.stats.refused += 1
            self.settle_all()
        finally:
            self.set_faults({})
        fired = self.fault_log.since(mark)
        self.stats.faults_fired += len(fired)
        if fault is not None and fault.kind == "hang":
            # let a hung call finish what it was doing before anything is judged
            for _point, at in fired:
                time.sleep(max(0.0, at + HANG + 0.3 - time.monotonic()))
            self.settle_all()
        shown = None
        if server is not None:
            shown = self.settle(server.id)
        return resp, Outcome(resp.status_code, [p for p, _ in fired], shown)

    def request_id(self, resp: Any) -> str:
        return resp.headers["x-openstack-request-id"]

    def action(self, server: Server, body: dict[str, Any]):  # type: ignore[no-untyped-def]
        return lambda: self.api.post(f"/servers/{server.id}/action", json=body)

    # --- checks ----------------------------------------------------------------------------

    @staticmethod
    def describe(shown: dict[str, Any] | None) -> str:
        if shown is None:
            return "gone (404)"
        return (
            f"{shown['status']} on {shown.get('OS-EXT-SRV-ATTR:host')} with "
            f"{shown['flavor'].get('original_name')}, power {shown['OS-EXT-STS:power_state']}, "
            f"fault {shown.get('fault')}"
        )

    def refused(self, op: str, server: Server, out: Outcome) -> None:
        """A refused request is a 4xx and the server is as it was."""
        assert 400 <= out.code < 500, f"{op} of {server.ref} in {server.status}: {out.code}"
        self.stats.outcome(op, "refused")
        self.check_unchanged(op, server, out.shown)

    def check_unchanged(self, op: str, server: Server, shown: dict[str, Any] | None) -> None:
        assert shown is not None, f"{op}: {server.ref} was lost"
        assert shown["status"] == server.status, (
            f"{op} of {server.ref}: status {server.status} -> {self.describe(shown)}"
        )
        assert shown["OS-EXT-SRV-ATTR:host"] == server.host, (
            f"{op} of {server.ref}: host {server.host} -> {self.describe(shown)}"
        )

    def expect(
        self,
        op: str,
        server: Server,
        out: Outcome,
        *,
        status: set[str],
        host: Any = ANY,
        not_host: str | None = None,
        flavor: str | None = None,
    ) -> bool:
        """Does ``out`` match the expectation?  (Not an assertion: faults allow several.)"""
        shown = out.shown
        if shown is None or shown["status"] not in status:
            return False
        got_host = shown["OS-EXT-SRV-ATTR:host"]
        if host is not ANY and got_host not in (host if isinstance(host, set) else {host}):
            return False
        if not_host is not None and got_host == not_host:
            return False
        return flavor is None or shown["flavor"]["original_name"] == FLAVOR_NAMES[flavor]

    def judge(
        self,
        op: str,
        server: Server,
        fault: Fault | None,
        out: Outcome,
        ok: bool,
        failed: bool,
        want: str,
    ) -> None:
        """``ok``: the success state; ``failed``: the documented failure state."""
        if ok:
            self.stats.outcome(op, "done")
            return
        if out.fired and failed:
            self.stats.outcome(op, "failed (fault)")
            return
        raise AssertionError(
            f"{op} of {server.ref} ({'volume' if server.volume_backed else 'image'}-backed, "
            f"was {server.status} on {server.host} with {FLAVOR_NAMES[server.flavor]}); "
            f"fault {fault} fired: {out.fired or 'none'}; expected {want}; "
            f"got {self.describe(out.shown)}"
        )

    def adopt(self, server: Server, shown: dict[str, Any]) -> None:
        """Take the settled state the server shows into the model."""
        server.status = shown["status"]
        server.host = shown["OS-EXT-SRV-ATTR:host"]
        server.flavor = FLAVOR_BY_NAME[shown["flavor"]["original_name"]]
        if server.status in ("ACTIVE", "SHUTOFF"):
            server.running = server.status == "ACTIVE"
        if server.status != "VERIFY_RESIZE":
            server.move = None

    # --- the deployment --------------------------------------------------------------------

    @initialize(
        target=servers,
        cross_cell=st.sampled_from(["stay-in-cell", "leave-cell"]),
        volume_backed=st.booleans(),
        flavor=st.sampled_from(FLAVOR_IDS),
    )
    @tracked
    def start_atoll(self, cross_cell: str, volume_backed: bool, flavor: str) -> ServerRef:
        """A fresh atoll per example (moves stay in their cell, or always leave it), with
        a first server so that every rule has something to work on."""
        multiplier = 1_000_000.0 if cross_cell == "stay-in-cell" else -1_000_000.0
        self.atoll = self.stack.enter_context(
            running_atoll(
                self.tmp / f"example{self.example}",
                timeouts={"rpc_call": RPC_TIMEOUT, "workflow_step": RPC_TIMEOUT},
                audit_interval=0.0,
                scheduler={"cross_cell_weight_multiplier": multiplier},
            )
        )
        assert sorted(h for hs in self.atoll.embedded.cells.values() for h in hs) == HOSTS
        points = {p["name"] for p in self.api.ok("GET", "/atoll-admin/faults")["points"]}
        missing = sorted({p for ps in FAULT_POINTS.values() for p in ps} - points)
        assert not missing, f"fault points not registered: {missing}"
        return self.create_server(volume_backed, flavor, None)

    def teardown(self) -> None:
        try:
            if self.atoll is not None and self.healthy:
                self.delete_everything()
        finally:
            self.stack.close()
            self.atoll = None

    def delete_everything(self) -> None:
        """At the end of an example every server goes and nothing of them is left."""
        for server in list(self.model.values()):
            resp = self.api.delete(f"/servers/{server.id}")
            assert resp.status_code == 204, f"final delete of {server.ref}: {resp.text}"
            deadline = time.monotonic() + SETTLE_TIMEOUT
            while self.show(server.id) is not None:
                assert time.monotonic() < deadline, f"{server.ref} not deleted at the end"
                time.sleep(POLL)
            del self.model[server.ref]
        report = self.api.ok("GET", "/atoll-admin/audit")
        assert report["clean"], f"audit after deleting everything: {report['problems']}"
        usage = self.api.ok("GET", "/os-hypervisors/detail", version="2.87")["hypervisors"]
        used = {
            h["hypervisor_hostname"]: (h["vcpus_used"], h["memory_mb_used"], h["local_gb_used"])
            for h in usage
        }
        assert all(u == (0, 0, 0) for u in used.values()), f"usage left behind: {used}"
        for host in HOSTS:
            guests = self.api.ok("GET", f"/atoll-admin/hosts/{host}/guests")["guests"]
            assert guests == [], f"guests left on {host}: {guests}"

    # --- rules -----------------------------------------------------------------------------

    @precondition(lambda self: len(self.model) < MAX_SERVERS)
    @rule(
        target=servers,
        volume_backed=st.booleans(),
        flavor=st.sampled_from(FLAVOR_IDS),
        fault=faults_for("create"),
    )
    @tracked
    def create(self, volume_backed: bool, flavor: str, fault: Fault | None) -> ServerRef:
        return self.create_server(volume_backed, flavor, fault)

    def create_server(self, volume_backed: bool, flavor: str, fault: Fault | None) -> ServerRef:
        """Image-backed, or booted from a new volume made from the image (BDMv2 source
        image, destination volume, deleted with the server)."""
        assert self.atoll is not None
        self.counter += 1
        ref = ServerRef(f"vm{self.counter}")
        body = self.atoll.server_body(name=ref.name, flavor=flavor)
        if volume_backed:
            body["server"]["imageRef"] = ""
            body["server"]["block_device_mapping_v2"] = [
                {
                    "boot_index": 0,
                    "uuid": self.atoll.image_id,
                    "source_type": "image",
                    "destination_type": "volume",
                    "volume_size": 1,
                    "delete_on_termination": True,
                }
            ]
        created: dict[str, str] = {}

        def workflow(resp: Any) -> str:
            created["id"] = resp.json()["server"]["id"]
            return f"build-{created['id']}"

        resp, out = self.run(
            "create", None, fault, lambda: self.api.post("/servers", json=body), workflow
        )
        assert resp.status_code == 202, f"create {ref}: {resp.status_code} {resp.text}"
        server = Server(ref, created["id"], volume_backed, "BUILD", None, flavor)
        shown = self.settle(server.id)
        assert shown is not None, f"new server {ref} ({server.id}) was lost (404)"
        out.shown = shown
        self.judge(
            "create",
            server,
            fault,
            out,
            self.expect("create", server, out, status={"ACTIVE"}, host=set(HOSTS), flavor=flavor),
            self.expect("create", server, out, status={"ERROR"}, flavor=flavor),
            "ACTIVE on a host (or ERROR after a fault)",
        )
        self.adopt(server, shown)
        self.model[ref] = server
        return ref

    @rule(server=servers, fault=faults_for("stop"))
    @tracked
    def stop(self, server: ServerRef, fault: Fault | None) -> None:
        s = self.model[server]
        _, out = self.run(
            "stop", s, fault, self.action(s, {"os-stop": None}), self.power_wf(s, "stop")
        )
        if s.status not in ("ACTIVE", "ERROR"):
            return self.refused("stop", s, out)
        assert out.code == 202, f"stop of {server} in {s.status}: {out.code}"
        ok = self.expect("stop", s, out, status={"SHUTOFF"}, host=s.host)
        unchanged = self.expect("stop", s, out, status={s.status}, host=s.host)
        if s.status == "ERROR":  # stopping an ERROR server is not promised to work
            ok = ok or unchanged
        self.judge("stop", s, fault, out, ok, unchanged, "SHUTOFF on the same host")
        self.adopt(s, out.shown)  # type: ignore[arg-type]

    @precondition(lambda self: any(s.status == "SHUTOFF" for s in self.model.values()))
    @rule(data=st.data(), fault=faults_for("start"))
    @tracked
    def start(self, data: st.DataObject, fault: Fault | None) -> None:
        s = self.pick(data, "SHUTOFF")
        server = s.ref
        _, out = self.run(
            "start", s, fault, self.action(s, {"os-start": None}), self.power_wf(s, "start")
        )
        if s.status != "SHUTOFF":
            return self.refused("start", s, out)
        assert out.code == 202, f"start of {server}: {out.code}"
        self.judge(
            "start",
            s,
            fault,
            out,
            self.expect("start", s, out, status={"ACTIVE"}, host=s.host),
            self.expect("start", s, out, status={"SHUTOFF"}, host=s.host),
            "ACTIVE on the same host",
        )
        self.adopt(s, out.shown)  # type: ignore[arg-type]

    @rule(server=servers, fault=faults_for("reboot"))
    @tracked
    def reboot_hard(self, server: ServerRef, fault: Fault | None) -> None:
        self.hard_reboot(self.model[server], fault)

    @precondition(lambda self: any(s.status == "ERROR" and s.host for s in self.model.values()))
    @rule(data=st.data())
    @tracked
    def recover_from_error(self, data: st.DataObject) -> None:
        """A server left in ERROR by a fault comes back with a hard reboot."""
        errored = sorted(
            (s.ref for s in self.model.values() if s.status == "ERROR" and s.host),
            key=lambda r: r.name,
        )
        self.hard_reboot(self.model[data.draw(st.sampled_from(errored), label="server")], None)

    def pick(self, data: st.DataObject, status: str) -> Server:
        """A server in ``status`` (the precondition says there is one), or now and then
        any server, for which the operation may be refused."""
        refs = sorted(self.model, key=lambda r: r.name)
        wanted = [r for r in refs if self.model[r].status == status]
        ref = data.draw(st.sampled_from(wanted) | st.sampled_from(refs), label="server")
        return self.model[ref]

    def hard_reboot(self, s: Server, fault: Fault | None) -> None:
        _, out = self.run(
            "reboot",
            s,
            fault,
            self.action(s, {"reboot": {"type": "HARD"}}),
            self.power_wf(s, "reboot"),
        )
        if s.status not in ("ACTIVE", "SHUTOFF", "ERROR") or not s.host:
            return self.refused("reboot", s, out)
        assert out.code == 202, f"hard reboot of {s.ref} in {s.status}: {out.code}"
        ok = self.expect("reboot", s, out, status={"ACTIVE"}, host=s.host, flavor=s.flavor)
        failed = self.expect("reboot", s, out, status={"ERROR"}, host=s.host)
        if s.delete_failed:  # half deleted: only a delete is promised to finish it
            ok = ok or failed
        self.judge("reboot", s, fault, out, ok, failed, "ACTIVE on the same host")
        self.adopt(s, out.shown)  # type: ignore[arg-type]

    @rule(server=servers, flavor=st.sampled_from(FLAVOR_IDS), fault=faults_for("resize"))
    @tracked
    def resize(self, server: ServerRef, flavor: str, fault: Fault | None) -> None:
        s = self.model[server]
        valid = (
            s.status in ("ACTIVE", "SHUTOFF")
            and bool(s.host)
            and flavor != s.flavor
            and (s.volume_backed or ROOT_GB[flavor] >= ROOT_GB[s.flavor])
        )
        self.move("resize", s, {"resize": {"flavorRef": flavor}}, fault, valid, flavor, None)

    @rule(
        server=servers,
        host=st.none() | st.sampled_from(HOSTS),
        fault=faults_for("migrate"),
    )
    @tracked
    def migrate(self, server: ServerRef, host: str | None, fault: Fault | None) -> None:
        s = self.model[server]
        valid = s.status in ("ACTIVE", "SHUTOFF") and bool(s.host) and host != s.host
        body = {"migrate": {"host": host} if host else None}
        self.move("migrate", s, body, fault, valid, s.flavor, host)

    def move(
        self,
        op: str,
        s: Server,
        body: dict[str, Any],
        fault: Fault | None,
        valid: bool,
        flavor: str,
        host: str | None,
    ) -> None:
        started: dict[str, str] = {}

        def workflow(resp: Any) -> str:
            new = [m for m in self.migration_ids(s.id) if m not in s.migrations]
            assert len(new) == 1, f"{op} of {s.ref} accepted: new migrations {new}"
            s.migrations.add(new[0])
            started["migration"] = new[0]
            return f"move-{new[0]}"

        _, out = self.run(op, s, fault, self.action(s, body), workflow)
        if not valid:
            return self.refused(op, s, out)
        assert out.code == 202, f"{op} of {s.ref} in {s.status}: {out.code}"
        migration = started["migration"]
        ok = self.expect(op, s, out, status={"VERIFY_RESIZE"}, not_host=s.host, flavor=flavor)
        if ok and host is not None:
            ok = out.shown["OS-EXT-SRV-ATTR:host"] == host  # type: ignore[index]
        power = out.shown and out.shown["OS-EXT-STS:power_state"]
        if ok:
            ok = power == (RUNNING if s.running else SHUTDOWN)
        # DESIGN "Moves" 8: rolled back, ERROR on the source with the old flavor
        rolled_back = self.expect(op, s, out, status={"ERROR"}, host=s.host, flavor=s.flavor)
        self.judge(
            op,
            s,
            fault,
            out,
            ok,
            rolled_back,
            f"VERIFY_RESIZE on {host or 'another host'} with {FLAVOR_NAMES[flavor]}",
        )
        move = Move(migration, s.host, s.flavor, flavor, s.running) if ok else None  # type: ignore[arg-type]
        self.adopt(s, out.shown)  # type: ignore[arg-type]
        s.move = move

    @precondition(lambda self: any(s.status == "VERIFY_RESIZE" for s in self.model.values()))
    @rule(data=st.data(), fault=faults_for("confirm"))
    @tracked
    def confirm_resize(self, data: st.DataObject, fault: Fault | None) -> None:
        s = self.pick(data, "VERIFY_RESIZE")
        server = s.ref
        wf = self.resolution_wf(s, "confirm")
        _, out = self.run("confirm", s, fault, self.action(s, {"confirmResize": None}), wf)
        if s.status != "VERIFY_RESIZE":
            return self.refused("confirm", s, out)
        assert out.code == 204, f"confirmResize of {server}: {out.code}"
        assert s.move is not None
        settled = "ACTIVE" if s.move.running else "SHUTOFF"
        self.judge(
            "confirm",
            s,
            fault,
            out,
            self.expect("confirm", s, out, status={settled}, host=s.host, flavor=s.flavor),
            self.expect("confirm", s, out, status={"ERROR"}, host=s.host, flavor=s.flavor),
            f"{settled} on the new host {s.host} with {FLAVOR_NAMES[s.flavor]}",
        )
        self.adopt(s, out.shown)  # type: ignore[arg-type]

    @precondition(lambda self: any(s.status == "VERIFY_RESIZE" for s in self.model.values()))
    @rule(data=st.data(), fault=faults_for("revert"))
    @tracked
    def revert_resize(self, data: st.DataObject, fault: Fault | None) -> None:
        s = self.pick(data, "VERIFY_RESIZE")
        server = s.ref
        wf = self.resolution_wf(s, "revert")
        _, out = self.run("revert", s, fault, self.action(s, {"revertResize": None}), wf)
        if s.status != "VERIFY_RESIZE":
            return self.refused("revert", s, out)
        assert out.code == 202, f"revertResize of {server}: {out.code}"
        mv = s.move
        assert mv is not None
        settled = "ACTIVE" if mv.running else "SHUTOFF"
        ok = self.expect(
            "revert", s, out, status={settled}, host=mv.source_host, flavor=mv.old_flavor
        )
        failed = self.expect("revert", s, out, status={"ERROR"}, host={s.host, mv.source_host})
        self.judge(
            "revert",
            s,
            fault,
            out,
            ok,
            failed,
            f"{settled} back on {mv.source_host} with {FLAVOR_NAMES[mv.old_flavor]}",
        )
        self.adopt(s, out.shown)  # type: ignore[arg-type]

    @rule(target=servers, server=consumes(servers), fault=faults_for("delete"))
    @tracked
    def delete(self, server: ServerRef, fault: Fault | None):  # type: ignore[no-untyped-def]
        s = self.model[server]

        def workflow(resp: Any) -> str:
            return f"delete-{s.id}-{self.request_id(resp)}"

        def send():  # type: ignore[no-untyped-def]
            return self.api.delete(f"/servers/{s.id}")

        del self.model[server]  # while it goes, settle_all does not wait for it
        _, out = self.run("delete", s, fault, send, workflow)
        assert out.code == 204, f"delete of {server} in {s.status}: {out.code}"
        if out.shown is None:
            self.stats.outcome("delete", "done")
            return multiple()
        self.judge(
            "delete",
            s,
            fault,
            out,
            False,
            self.expect("delete", s, out, status={"ERROR"}),
            "404 once the delete is done",
        )
        self.adopt(s, out.shown)
        s.delete_failed = True
        self.model[server] = s
        return server

    # --- workflow ids ----------------------------------------------------------------------

    def power_wf(self, s: Server, act: str):  # type: ignore[no-untyped-def]
        return lambda resp: f"{act}-{s.id}-{self.request_id(resp)}"

    def resolution_wf(self, s: Server, kind: str):  # type: ignore[no-untyped-def]
        def workflow(resp: Any) -> str:
            assert s.move is not None, f"{kind} accepted for {s.ref} with no move in the model"
            return f"{kind}-{s.move.migration}-{self.request_id(resp)}"

        return workflow

    # --- invariants ------------------------------------------------------------------------

    @invariant()
    @tracked
    def invariants_hold(self) -> None:
        if self.atoll is None:
            return
        report = self.api.ok("GET", "/atoll-admin/audit")
        assert report["clean"], "audit found problems:\n" + "\n".join(
            str(p) for p in report["problems"]
        )
        listed = [s["id"] for s in self.api.ok("GET", "/servers/detail?all_tenants=1")["servers"]]
        for server in self.model.values():
            shown = self.show(server.id)
            assert shown is not None, f"server {server.ref} ({server.id}) was lost (404)"
            assert listed.count(server.id) == 1, f"{server.ref} listed {listed.count(server.id)}x"
            status = shown["status"]
            assert status in ALLOWED, f"{server.ref} is {status}"
            assert status == server.status, f"{server.ref}: model {server.status}, shown {status}"
            assert shown["OS-EXT-STS:task_state"] is None, f"{server.ref} busy: {shown}"
            power = shown["OS-EXT-STS:power_state"]
            if status == "ACTIVE":
                assert power == RUNNING, f"{server.ref} ACTIVE with power state {power}"
            if status == "SHUTOFF":
                assert power == SHUTDOWN, f"{server.ref} SHUTOFF with power state {power}"
            if status == "VERIFY_RESIZE":
                assert server.move is not None
                want = RUNNING if server.move.running else SHUTDOWN
                assert power == want, f"{server.ref} VERIFY_RESIZE with power state {power}"


# --- the test --------------------------------------------------------------------------------


# Passing runs take a few seconds per example; a failing one adds hypothesis's
# shrinking (at most 300 s), which must not be cut short by pytest-timeout or the
# falsifying example is lost.
@pytest.mark.timeout(420 + 30 * EXAMPLES)
def test_random_lifecycles_with_faults_keep_the_invariants(
    tmp_path: Path,
) -> None:
    stats = Stats()
    fault_log = FaultLog()
    logger = logging.getLogger("atoll.faults")
    old_level = logger.level
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)
    logger.addHandler(fault_log)
    started = time.monotonic()
    try:
        run_state_machine_as_test(
            lambda: AtollLifecycle(tmp_path, stats, fault_log),
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                database=None,
                derandomize=False,
                suppress_health_check=[
                    HealthCheck.too_slow,
                    HealthCheck.filter_too_much,
                    HealthCheck.data_too_large,
                ],
            ),
        )
    finally:
        logger.removeHandler(fault_log)
        logger.setLevel(old_level)
        elapsed = time.monotonic() - started
        counts = (
            f"ran {stats.examples} examples, {stats.steps} steps in {elapsed:.1f}s "
            f"(outcomes: {dict(sorted(stats.outcomes.items()))}; faults injected "
            f"{stats.faults_injected}, fired {stats.faults_fired})"
        )
        print(f"\n{counts}")  # shown with -s
        RESULTS.notes.append(counts)
        (tmp_path / "hypothesis-stateful.txt").write_text(counts + "\n")
    summary = stats.summary()
    print(summary)
    RESULTS.notes.append(summary)
    with (tmp_path / "hypothesis-stateful.txt").open("a") as fh:
        fh.write(summary + "\n")
    report = os.environ.get("ATOLL_HYPOTHESIS_REPORT")
    if report:
        with open(report, "a") as fh:
            fh.write(summary + "\n")
