"""Resize and cold migrate, within a cell or across cells.

Same cell: prepare at the destination, resize at the source, finish at the
destination.  Across cells: copy the server into the target cell (hidden),
prepare at the destination (trying the next alternate host of the target cell
when that fails), prepare at the source (stop, snapshot, keep the disks), finish
at the destination, then swap the visible copy and the instance mapping: the
point of no return.  Before it, any failure rolls back every completed step in
reverse order; after it, the workflow only goes forward.
"""

from __future__ import annotations

import logging
from typing import Any

from dbos import DBOS

from atoll import actions
from atoll.conductor import moves
from atoll.conductor.moves import (
    Allocations,
    DestFinish,
    DestPrep,
    SourcePrep,
    TargetCopy,
)
from atoll.conductor.saga import Saga
from atoll.conductor.steps import step
from atoll.exceptions import Conflict, NoValidHost, ResumedBeforePointOfNoReturn
from atoll.runtime import current

LOG = logging.getLogger(__name__)

CONDUCTOR_EVENT = "conductor_migrate_server"


def workflow_id(migration_uuid: str) -> str:
    return f"move-{migration_uuid}"


@step(name="move.conductor_event_start")
def event_start(ctx: dict[str, Any], mv: dict[str, Any]) -> int | None:
    current().notifier.instance("instance.resize_prep.start", {"uuid": mv["instance_uuid"]})
    return actions.event_start(
        mv["source_db"], moves.ctx_of(ctx), mv["instance_uuid"], CONDUCTOR_EVENT, None
    )


@step(name="move.conductor_event_finish")
def event_finish(ctx: dict[str, Any], mv: dict[str, Any], record_db: str) -> None:
    request = moves.ctx_of(ctx)
    event_id = actions.event_start(record_db, request, mv["instance_uuid"], CONDUCTOR_EVENT, None)
    actions.event_finish(record_db, event_id)
    actions.finish_action(record_db, request, mv["instance_uuid"], error=False)
    current().notifier.instance("instance.resize_finish.end", {"uuid": mv["instance_uuid"]})


@step(name="move.set_task_state")
def set_task_state(mv: dict[str, Any], task_state: str) -> None:
    moves.save_copy(mv["source_db"], mv["instance_uuid"], task_state=task_state)
    moves.save_migration(mv["source_db"], mv["migration_uuid"], status="migrating")


@DBOS.workflow(name="move_server")
def move_server(ctx: dict[str, Any], mv: dict[str, Any]) -> str:
    saga = Saga(f"move {mv['migration_uuid']}")
    event_start(ctx, mv)
    try:
        saga.push(Allocations.back_to_server, mv)
        Allocations.to_migration(mv)
        selections = moves.schedule(mv)
        saga.push(Allocations.release_destination, mv)
        set_task_state(mv, "resize_migrating")
        primary = selections[0]
        mv = {**mv, "cross_cell": primary["cell_id"] != mv["source_cell_id"]}
        if mv["cross_cell"]:
            record_db = _cross_cell(ctx, mv, selections, saga)
        else:
            record_db = _same_cell(ctx, mv, primary, saga)
    except Exception as exc:
        errors = saga.rollback()
        message = str(exc) or type(exc).__name__
        if errors:
            message += f" (and the rollback could not undo: {'; '.join(errors)})"
        # No host found, or a conductor that died before the point of no return and a
        # clean rollback: the server is back as it was, so it stays usable.
        as_it_was = isinstance(exc, NoValidHost) or (
            isinstance(exc, ResumedBeforePointOfNoReturn) and not errors
        )
        moves.fail_move(ctx, mv, message, keep_state=as_it_was)
        return "error"
    event_finish(ctx, mv, record_db)
    return "finished"


def _same_cell(ctx: dict[str, Any], mv: dict[str, Any], dest: dict[str, Any], saga: Saga) -> str:
    db = mv["source_db"]
    saga.push(DestPrep.undo, mv, dest["host"])
    DestPrep.run(ctx, mv, dest["host"], db)
    saga.push(SourcePrep.undo, ctx, mv)
    prepared = SourcePrep.run(ctx, mv, db)
    saga.push(DestFinish.undo, ctx, mv, dest)
    state = DestFinish.run(ctx, mv, dest, db, prepared)
    moves.cut_over(mv, dest, db, state)
    saga.forget()
    return db


def _cross_cell(
    ctx: dict[str, Any], mv: dict[str, Any], selections: list[dict[str, Any]], saga: Saga
) -> str:
    rt = current()
    target_db = rt.cells.by_id(selections[0]["cell_id"]).db_url
    saga.push(TargetCopy.remove, mv, target_db)
    TargetCopy.create(mv, target_db)
    dest = _prepare_a_destination(ctx, mv, selections, target_db)
    saga.push(DestPrep.undo, mv, dest["host"])
    saga.push(SourcePrep.undo, ctx, mv)
    prepared = SourcePrep.run(ctx, mv, target_db)
    saga.push(DestFinish.undo, ctx, mv, dest)
    state = DestFinish.run(ctx, mv, dest, target_db, prepared)
    moves.delete_snapshot(mv, prepared)  # the destination's guest no longer needs it
    moves.cut_over(mv, dest, target_db, state)
    saga.forget()  # past the point of no return: from here on only forward
    return target_db


def _prepare_a_destination(
    ctx: dict[str, Any], mv: dict[str, Any], selections: list[dict[str, Any]], target_db: str
) -> dict[str, Any]:
    """Prepare the primary; when that fails, the next alternate of the target cell."""
    last_error: Exception | None = None
    for attempt, selection in enumerate(selections):
        if attempt > 0:
            try:
                moves.claim_alternate(mv, selection)
            except Conflict as exc:
                LOG.info("alternate %s is full: %s", selection["host"], exc)
                last_error = exc
                continue
        try:
            DestPrep.run(ctx, mv, selection["host"], target_db)
            return selection
        except ResumedBeforePointOfNoReturn:
            raise  # the move is being rolled back, not retried elsewhere
        except Exception as exc:
            LOG.warning(
                "preparing %s on %s failed, trying the next host: %s",
                mv["instance_uuid"],
                selection["host"],
                exc,
            )
            DestPrep.undo(mv, selection["host"])
            Allocations.release_destination(mv)
            last_error = exc
    raise last_error or NoValidHost("No valid host was found in the target cell.")
