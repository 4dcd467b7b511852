"""The placement database: resource providers, their inventories, consumers and allocations.

Its own declarative base (``PlacementBase``) so that the placement tables can live
in a database of their own, as in OpenStack.  Resource classes are plain strings
("VCPU", "MEMORY_MB", "DISK_GB", or any custom name) stored on each row.

A provider's ``generation`` changes whenever its inventory or any allocation
against it changes, in the same transaction: writers read it, check capacity and
then bump it with ``UPDATE ... WHERE generation = :seen``, so two writers can never
both act on the same reading.  A consumer's ``generation`` does the same for its
allocation set.  A consumer row exists only while it holds allocations.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from atoll.db.types import created_col


class PlacementBase(DeclarativeBase):
    pass


class ResourceProvider(PlacementBase):
    """Something that has resources: a compute node (or, nested, a part of one)."""

    __tablename__ = "resource_providers"
    # ids are never reused (SQLite would otherwise hand a deleted max id out again),
    # so (id, generation) identifies one provider's state for the snapshot cache
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    generation: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    # NULL root means "I am a root"; NULL parent means "I have no parent".
    root_provider_id: Mapped[int | None] = mapped_column(
        ForeignKey("resource_providers.id"), nullable=True, index=True
    )
    parent_provider_id: Mapped[int | None] = mapped_column(
        ForeignKey("resource_providers.id"), nullable=True, index=True
    )
    created_at: Mapped[dt.datetime] = created_col()
    updated_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Inventory(PlacementBase):
    """How much of one resource class a provider has, and how it may be handed out."""

    __tablename__ = "inventories"
    __table_args__ = (UniqueConstraint("resource_provider_id", "resource_class"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("resource_providers.id"), nullable=False
    )
    resource_class: Mapped[str] = mapped_column(String(255), nullable=False)
    total: Mapped[int] = mapped_column(Integer, nullable=False)
    reserved: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    min_unit: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    max_unit: Mapped[int] = mapped_column(Integer, nullable=False)
    step_size: Mapped[int] = mapped_column(Integer, default=1, nullable=False)
    allocation_ratio: Mapped[float] = mapped_column(Double, default=1.0, nullable=False)


class Consumer(PlacementBase):
    """Whoever holds allocations: a server, or a migration during a move."""

    __tablename__ = "consumers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    project_id: Mapped[str] = mapped_column(String(255), nullable=False)
    user_id: Mapped[str] = mapped_column(String(255), nullable=False)
    generation: Mapped[int] = mapped_column(Integer, default=0, nullable=False)
    created_at: Mapped[dt.datetime] = created_col()


class Allocation(PlacementBase):
    """``used`` units of one resource class of one provider, held by one consumer."""

    __tablename__ = "allocations"
    __table_args__ = (
        UniqueConstraint("consumer_id", "resource_provider_id", "resource_class"),
        # covering index: a provider's usage per class is summed from the index alone
        Index(
            "ix_allocations_provider_class_used", "resource_provider_id", "resource_class", "used"
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    resource_provider_id: Mapped[int] = mapped_column(
        ForeignKey("resource_providers.id"), nullable=False
    )
    consumer_id: Mapped[int] = mapped_column(ForeignKey("consumers.id"), nullable=False)
    resource_class: Mapped[str] = mapped_column(String(255), nullable=False)
    used: Mapped[int] = mapped_column(Integer, nullable=False)
