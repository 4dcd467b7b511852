"""What the image, volume and network services share: timestamps, a sentinel, row locks."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET = _Unset.UNSET
"""Marks a keyword argument as "not given" where None is a meaningful value."""

Unset = _Unset


def iso(value: dt.datetime | None) -> str | None:
    """A naive-UTC timestamp as ISO-8601 with a Z, to the second ("2026-11-21T14:53:00Z")."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def lock_row(session: Session, model: Any, key: str) -> None:
    """Take the write lock on one row (by ``id``) for the rest of the transaction.

    A no-op UPDATE rather than SELECT ... FOR UPDATE because it works the same on
    all three back ends: PostgreSQL and InnoDB lock the matched row, and SQLite
    (whose driver opens the transaction only at the first write) takes its
    database write lock there, under the busy timeout, before anything is read.
    Concurrent callers touching the same row are therefore serialized and the
    check-then-write sequences that follow cannot interleave.
    """
    session.execute(
        update(model)
        .where(model.id == key)
        .values(id=model.id)
        .execution_options(synchronize_session=False)
    )
