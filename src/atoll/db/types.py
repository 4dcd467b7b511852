"""Column helpers shared by every atoll schema."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import DateTime
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import mapped_column

# MySQL/MariaDB keep whole seconds by default; rows made in one second would sort
# in no particular order (instance actions, events and migrations list by time).
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def new_uuid() -> str:
    return str(uuid.uuid4())


def created_col():  # type: ignore[no-untyped-def]
    return mapped_column(Timestamp, default=utcnow, nullable=False)


def updated_col():  # type: ignore[no-untyped-def]
    return mapped_column(Timestamp, default=utcnow, onupdate=utcnow, nullable=True)
