"""The one way to record instance actions and their events.

An action is keyed by (server, request id) like the compute API shows it; an
event is keyed by (action, event name), so a resumed workflow step that records
the same event again updates it instead of adding a duplicate.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import select

from atoll.context import RequestContext
from atoll.db.cell_models import InstanceAction, InstanceActionEvent
from atoll.db.session import session_scope
from atoll.db.types import utcnow

LOG = logging.getLogger(__name__)

SUCCESS = "Success"
ERROR = "Error"


def start_action(cell_db: str, ctx: RequestContext, instance_uuid: str, action: str) -> int:
    """Record that ``action`` began on the server; idempotent per request id."""
    with session_scope(cell_db) as s:
        row = s.scalar(
            select(InstanceAction).where(
                InstanceAction.instance_uuid == instance_uuid,
                InstanceAction.request_id == ctx.request_id,
                InstanceAction.deleted == 0,
            )
        )
        if row is None:
            row = InstanceAction(
                action=action,
                instance_uuid=instance_uuid,
                request_id=ctx.request_id,
                user_id=ctx.user_id,
                project_id=ctx.project_id,
            )
            s.add(row)
            s.flush()
        return row.id


def finish_action(cell_db: str, ctx: RequestContext, instance_uuid: str, *, error: bool) -> None:
    with session_scope(cell_db) as s:
        row = s.scalar(
            select(InstanceAction).where(
                InstanceAction.instance_uuid == instance_uuid,
                InstanceAction.request_id == ctx.request_id,
                InstanceAction.deleted == 0,
            )
        )
        if row is not None:
            row.finish_time = utcnow()
            if error:
                row.message = ERROR


def event_start(
    cell_db: str, ctx: RequestContext, instance_uuid: str, event: str, host: str | None
) -> int | None:
    """Record that ``event`` began (again, for a resumed step) on the server's action."""
    with session_scope(cell_db) as s:
        action = s.scalar(
            select(InstanceAction).where(
                InstanceAction.instance_uuid == instance_uuid,
                InstanceAction.request_id == ctx.request_id,
                InstanceAction.deleted == 0,
            )
        )
        if action is None:
            LOG.warning(
                "no action %s for %s; event %s not recorded", ctx.request_id, instance_uuid, event
            )
            return None
        row = s.scalar(
            select(InstanceActionEvent).where(
                InstanceActionEvent.action_id == action.id,
                InstanceActionEvent.event == event,
            )
        )
        if row is None:
            row = InstanceActionEvent(action_id=action.id, event=event, host=host)
            s.add(row)
        row.start_time, row.finish_time, row.result, row.traceback = utcnow(), None, None, None
        row.host = host
        s.flush()
        return row.id


def event_finish(cell_db: str, event_id: int | None, error: BaseException | None = None) -> None:
    if event_id is None:
        return
    tb = "".join(traceback.format_exception(error)) if error is not None else None
    with session_scope(cell_db) as s:
        row = s.get(InstanceActionEvent, event_id)
        if row is not None:
            row.finish_time = utcnow()
            row.result = ERROR if error is not None else SUCCESS
            row.traceback = tb


@contextmanager
def action_event(
    cell_db: str, ctx: RequestContext, instance_uuid: str, event: str, host: str | None
) -> Iterator[None]:
    """Record ``event`` around a block: start time, finish time, result and traceback."""
    event_id = event_start(cell_db, ctx, instance_uuid, event, host)
    try:
        yield
    except BaseException as exc:
        event_finish(cell_db, event_id, exc)
        raise
    event_finish(cell_db, event_id)
