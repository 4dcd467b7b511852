"""Small steps every workflow uses: load records, change state, report failure."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from atoll import actions
from atoll.cells import Cell
from atoll.conductor.steps import step
from atoll.context import RequestContext
from atoll.db import instances
from atoll.db.api_models import RequestSpec
from atoll.db.session import session_scope
from atoll.runtime import current

LOG = logging.getLogger(__name__)

CELL0 = "cell0"


def cell_of(instance_uuid: str) -> Cell:
    cell = current().cells.for_instance(instance_uuid)
    if cell is None:
        raise instances.NotFound(f"Instance {instance_uuid} is not in a cell yet.")
    return cell


def request_spec(instance_uuid: str) -> dict[str, Any]:
    with session_scope(current().settings.api_db) as s:
        spec = s.scalar(select(RequestSpec.spec).where(RequestSpec.instance_uuid == instance_uuid))
    if spec is None:
        raise instances.NotFound(f"no request spec for {instance_uuid}")
    return dict(spec)


@step(name="set_instance_state")
def set_state(
    cell_db: str, instance_uuid: str, expected_task_state: Any = instances.ANY, **values: Any
) -> None:
    instances.save(cell_db, instance_uuid, expected_task_state=expected_task_state, **values)


@step(name="fail_instance")
def fail_instance(
    ctx: dict[str, Any],
    cell_db: str,
    instance_uuid: str,
    error: str,
    *,
    host: str | None,
    event_type: str,
    vm_state: str = "error",
) -> None:
    """ERROR, task_state cleared, a fault an operator can read, a notification."""
    instances.add_fault(cell_db, instance_uuid, error, host=host)
    try:
        instances.save(cell_db, instance_uuid, vm_state=vm_state, task_state=None)
    except instances.NotFound:
        LOG.warning("instance %s vanished while failing it", instance_uuid)
        return
    actions.finish_action(cell_db, RequestContext.from_dict(ctx), instance_uuid, error=True)
    inst = instances.get(cell_db, instance_uuid)
    current().notifier.instance(event_type, instances.payload(inst), exception=error)
    LOG.error("%s failed for %s: %s", event_type, instance_uuid, error)


@step(name="finish_action")
def finish(ctx: dict[str, Any], cell_db: str, instance_uuid: str, event_type: str | None) -> None:
    actions.finish_action(cell_db, RequestContext.from_dict(ctx), instance_uuid, error=False)
    if event_type:
        inst = instances.get(cell_db, instance_uuid)
        current().notifier.instance(event_type, instances.payload(inst))
