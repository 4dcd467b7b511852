"""A conductor process: the workflow engine, the periodic jobs, and a heartbeat
that lets conductors take over each other's workflows.

DBOS resumes, at start-up, the workflows of the executor id a process runs as.
A conductor that dies and never comes back would strand its workflows, so each
conductor writes a heartbeat row in the API DB; one whose heartbeat is older
than ``timeouts.conductor_takeover`` is dead, and the first live conductor to
mark its row (a compare-and-set, so only one wins) re-queues its pending
workflows, which any conductor then picks up and resumes from their last step.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading

from sqlalchemy import select, update

from atoll.conductor import engine
from atoll.conductor.periodic import PeriodicJobs
from atoll.db.api_models import ConductorService as ConductorRow
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.runtime import Runtime

LOG = logging.getLogger(__name__)

EMBEDDED_EXECUTOR = "local"  # DBOS's default; embedded data dirs already use it


def _silent_since(rt: Runtime) -> dt.datetime:
    """A conductor whose last heartbeat is older than this is dead."""
    return utcnow() - dt.timedelta(seconds=rt.settings.timeouts.conductor_takeover)


def default_name() -> str:
    return f"conductor-{socket.gethostname()}"


class ConductorService:
    def __init__(self, rt: Runtime, executor_id: str = EMBEDDED_EXECUTOR) -> None:
        self.rt = rt
        self.executor_id = executor_id
        self.periodic = PeriodicJobs(rt)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conductor-heartbeat", daemon=True)

    def start(self) -> ConductorService:
        engine.launch(self.rt.settings, self.executor_id)
        self.heartbeat(starting=True)
        self.periodic.start()
        self._thread.start()
        LOG.info("conductor %s started", self.executor_id)
        return self

    def stop(self) -> None:
        self._stop.set()
        self.periodic.stop()
        self._thread.join(timeout=10)
        engine.shutdown()

    def _run(self) -> None:
        while not self._stop.wait(self.rt.settings.timeouts.conductor_heartbeat):
            try:
                self.heartbeat()
                self.take_over_dead()
            except Exception:
                LOG.exception("conductor %s: heartbeat or takeover failed", self.executor_id)

    def heartbeat(self, *, starting: bool = False) -> None:
        now = utcnow()
        with session_scope(self.rt.settings.api_db) as s:
            row = s.scalar(select(ConductorRow).where(ConductorRow.executor_id == self.executor_id))
            if row is None:
                s.add(
                    ConductorRow(
                        executor_id=self.executor_id,
                        hostname=socket.gethostname(),
                        pid=os.getpid(),
                        started_at=now,
                        last_seen_at=now,
                    )
                )
                return
            row.last_seen_at = now
            if starting:
                row.started_at, row.pid = now, os.getpid()
                row.hostname = socket.gethostname()
                row.taken_over_by = row.taken_over_at = None

    def take_over_dead(self) -> list[str]:
        """Re-queue the workflows of every conductor that stopped beating; return their ids."""
        delay = self.rt.settings.timeouts.conductor_takeover
        cutoff = _silent_since(self.rt)
        with session_scope(self.rt.settings.api_db) as s:
            dead = s.execute(
                select(ConductorRow.id, ConductorRow.executor_id, ConductorRow.last_seen_at).where(
                    ConductorRow.last_seen_at < cutoff,
                    ConductorRow.taken_over_by.is_(None),
                    ConductorRow.executor_id != self.executor_id,
                )
            ).all()
        taken: list[str] = []
        for row_id, executor_id, last_seen in dead:
            with session_scope(self.rt.settings.api_db) as s:
                won = s.execute(
                    update(ConductorRow)
                    .where(
                        ConductorRow.id == row_id,
                        ConductorRow.taken_over_by.is_(None),
                        ConductorRow.last_seen_at == last_seen,
                    )
                    .values(taken_over_by=self.executor_id, taken_over_at=utcnow())
                ).rowcount
            if won != 1:
                continue  # another conductor was quicker, or it came back
            handles = engine.recover(executor_id)
            LOG.warning(
                "conductor %s took over %d workflow(s) of %s, silent since %s (takeover after %gs)",
                self.executor_id,
                len(handles),
                executor_id,
                last_seen.isoformat(),
                delay,
            )
            taken.append(executor_id)
        return taken


def live_executors(rt: Runtime) -> dict[str, dt.datetime]:
    """Executor ids of the conductors that beat within the takeover delay."""
    cutoff = _silent_since(rt)
    with session_scope(rt.settings.api_db) as s:
        rows = s.execute(
            select(ConductorRow.executor_id, ConductorRow.last_seen_at).where(
                ConductorRow.last_seen_at >= cutoff
            )
        ).all()
    return {executor: seen for executor, seen in rows}


def stuck_workflows(rt: Runtime) -> tuple[int, list[tuple[str, str]]]:
    """How many workflows are unfinished, and (workflow id, why) of each that no
    live conductor drives.

    A workflow is fine while it is running under a live conductor, or queued
    while some conductor is alive to take it; a dead conductor's workflows are
    fine until the takeover delay passes (another takes them over then).
    """
    live = live_executors(rt)
    stuck: list[tuple[str, str]] = []
    unfinished = engine.unfinished()
    for wf in unfinished:
        if wf.status == "PENDING" and wf.executor_id not in live:
            stuck.append(
                (
                    wf.workflow_id,
                    f"{wf.name} is pending under conductor {wf.executor_id}, which has not "
                    f"beaten for over {rt.settings.timeouts.conductor_takeover:g}s and was not "
                    "taken over: start a conductor",
                )
            )
        elif wf.status == "ENQUEUED" and not live:
            stuck.append((wf.workflow_id, f"{wf.name} is queued and no conductor runs: start one"))
    return len(unfinished), stuck
