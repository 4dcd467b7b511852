"""Conductor jobs that run on a timer (they need the API DB, so computes cannot).

- auto-confirm: a resize left in VERIFY_RESIZE longer than
  ``resize_confirm_window`` seconds is confirmed, as if its owner had asked.
- audit: every ``audit_interval`` seconds the invariants are checked; each problem
  is a log line and the counters are served at ``/v2.1/atoll-admin/audit/stats``.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from sqlalchemy import select

from atoll import actions, faults
from atoll.conductor import engine
from atoll.conductor.common import CELL0
from atoll.context import RequestContext
from atoll.db import instances
from atoll.db.cell_models import Migration
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.exceptions import InstanceInvalidState
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)

faults.register(
    "conductor.auto_confirm.api_db",
    "auto-confirm, when it reads the API DB (raise: the API DB is unreachable)",
)


def auto_confirm(rt: Runtime) -> int:
    """Confirm every resize older than the window; return how many were started."""
    from atoll.conductor import moves
    from atoll.conductor.workflows import confirm

    window = rt.settings.resize_confirm_window
    if window <= 0:
        return 0
    cutoff = utcnow() - dt.timedelta(seconds=window)
    started = 0
    for cell in rt.cells.all():
        if cell.name == CELL0:
            continue
        try:
            with session_scope(cell.db_url) as s:
                due = s.execute(
                    select(Migration.uuid, Migration.instance_uuid).where(
                        Migration.status == "finished",
                        Migration.hidden.is_(False),
                        Migration.deleted == 0,
                        Migration.updated_at < cutoff,
                    )
                ).all()
        except Exception as exc:
            LOG.error("Error auto-confirming resizes in cell %s: %s", cell.name, exc)
            continue
        for migration_uuid, instance_uuid in due:
            ctx = RequestContext.admin()
            try:
                faults.hit("conductor.auto_confirm.api_db", instance=instance_uuid)
                mapped = rt.cells.for_instance(instance_uuid)
                if mapped is None or mapped.id != cell.id:
                    continue
                instances.save(
                    cell.db_url,
                    instance_uuid,
                    expected_vm_state="resized",
                    expected_task_state=None,
                    task_state="resize_confirming",
                )
            except InstanceInvalidState:
                continue  # someone is acting on it; the next run looks again
            except Exception as exc:
                LOG.error(
                    "Error auto-confirming resize %s of %s: %s. Will retry later.",
                    migration_uuid,
                    instance_uuid,
                    exc,
                )
                continue
            try:
                actions.start_action(cell.db_url, ctx, instance_uuid, "confirmResize")
                mv = moves.describe_finished_move(rt, instance_uuid, cell)
                engine.start(
                    confirm.confirm_resize,
                    confirm.workflow_id(mv["migration_uuid"], ctx.request_id),
                    ctx.to_dict(),
                    mv,
                )
                started += 1
                LOG.info(
                    "auto-confirming the resize of %s (migration %s)", instance_uuid, migration_uuid
                )
            except Exception as exc:
                instances.save(cell.db_url, instance_uuid, task_state=None)
                LOG.error(
                    "Error auto-confirming resize %s of %s: %s. Will retry later.",
                    migration_uuid,
                    instance_uuid,
                    exc,
                )
    return started


class AuditCounters:
    """What the conductor's periodic audits found: runs, problems by kind, the last report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.runs = 0
        self.problems_by_kind: dict[str, int] = {}
        self.last: dict[str, Any] | None = None
        self.last_at: str | None = None

    def record(self, report: dict[str, Any]) -> None:
        with self._lock:
            self.runs += 1
            for problem in report["problems"]:
                kind = problem["kind"]
                self.problems_by_kind[kind] = self.problems_by_kind.get(kind, 0) + 1
            self.last, self.last_at = report, utcnow().isoformat()

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "runs": self.runs,
                "problems_by_kind": dict(self.problems_by_kind),
                "last_at": self.last_at,
                "last": self.last,
            }


def periodic_audit(rt: Runtime, counters: AuditCounters) -> None:
    """Audit, log a summary line, count what was found (each problem is logged too)."""
    from atoll.audit import run_audit

    report = run_audit(rt).as_dict()
    counters.record(report)
    if report["clean"]:
        LOG.info("periodic audit: clean (%s)", report["checked"])
    else:
        LOG.warning(
            "periodic audit: %d problem(s): %s",
            len(report["problems"]),
            sorted({p["kind"] for p in report["problems"]}),
        )


class PeriodicJobs:
    """Runs the conductor's jobs every ``periodic_interval`` seconds on one thread."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.audit_counters = AuditCounters()
        self._next_audit = time.monotonic() + rt.settings.audit_interval  # not at start-up
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conductor-periodic", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.rt.settings.periodic_interval):
            try:
                auto_confirm(self.rt)
            except Exception:
                LOG.exception("a periodic conductor job failed")
            interval = self.rt.settings.audit_interval
            if interval > 0 and time.monotonic() >= self._next_audit:
                self._next_audit = time.monotonic() + interval
                try:
                    periodic_audit(self.rt, self.audit_counters)
                except Exception:
                    LOG.exception("the periodic audit failed")
