"""Reading and changing server records in a cell DB.

State changes are compare-and-swap (``expected_*``): two requests racing on one
server cannot both start an action; the loser gets a 409 naming the state it
found.
"""

from __future__ import annotations

import traceback
from typing import Any

from sqlalchemy import select, update

from atoll.db.cell_models import Instance, InstanceFault
from atoll.db.session import session_scope
from atoll.db.types import utcnow
from atoll.exceptions import InstanceInvalidState, NotFound

ANY: Any = object()


def get(cell_db: str, uuid: str, *, include_hidden: bool = False) -> Instance:
    with session_scope(cell_db) as s:
        query = select(Instance).where(Instance.uuid == uuid, Instance.deleted == 0)
        if not include_hidden:
            query = query.where(Instance.hidden.is_(False))
        row = s.scalar(query)
        if row is None:
            raise NotFound(f"Instance {uuid} could not be found.")
        s.expunge(row)
        return row


def find(cell_db: str, uuid: str, *, include_hidden: bool = False) -> Instance | None:
    try:
        return get(cell_db, uuid, include_hidden=include_hidden)
    except NotFound:
        return None


def save(
    cell_db: str,
    uuid: str,
    *,
    expected_task_state: Any = ANY,
    expected_vm_state: Any = ANY,
    **values: Any,
) -> None:
    """Update a live, visible copy; with ``expected_*`` only from those states."""
    query = update(Instance).where(
        Instance.uuid == uuid, Instance.deleted == 0, Instance.hidden.is_(False)
    )
    if expected_task_state is not ANY:
        states = _as_tuple(expected_task_state)
        cond = Instance.task_state.in_([s for s in states if s is not None])
        if None in states:
            cond = cond | Instance.task_state.is_(None)
        query = query.where(cond)
    if expected_vm_state is not ANY:
        query = query.where(Instance.vm_state.in_(_as_tuple(expected_vm_state)))
    values.setdefault("updated_at", utcnow())
    with session_scope(cell_db) as s:
        result = s.execute(query.values(**values).execution_options(synchronize_session=False))
        if result.rowcount == 1:
            return
        row = s.scalar(
            select(Instance).where(
                Instance.uuid == uuid, Instance.deleted == 0, Instance.hidden.is_(False)
            )
        )
    if row is None:
        raise NotFound(f"Instance {uuid} could not be found.")
    raise InstanceInvalidState(
        f"Cannot do this while the instance is in vm_state {row.vm_state} and "
        f"task_state {row.task_state}"
    )


def add_fault(
    cell_db: str, uuid: str, exc: BaseException | str, *, host: str | None, code: int = 500
) -> None:
    message = str(exc) if not isinstance(exc, BaseException) else (str(exc) or type(exc).__name__)
    details = "".join(traceback.format_exception(exc)) if isinstance(exc, BaseException) else None
    with session_scope(cell_db) as s:
        s.add(
            InstanceFault(
                instance_uuid=uuid,
                code=getattr(exc, "code", code) if isinstance(exc, BaseException) else code,
                message=message[:255],
                details=details,
                host=host,
            )
        )


def payload(instance: Instance) -> dict[str, Any]:
    """The fields a notification carries about a server."""
    return {
        "uuid": instance.uuid,
        "display_name": instance.display_name,
        "tenant_id": instance.project_id,
        "user_id": instance.user_id,
        "host": instance.host,
        "node": instance.node,
        "state": instance.vm_state,
        "task_state": instance.task_state,
        "power_state": instance.power_state,
        "availability_zone": instance.availability_zone,
        "flavor": (instance.flavor or {}).get("cur"),
        "image_uuid": instance.image_ref,
    }


def _as_tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if isinstance(value, list | tuple | set) else (value,)
