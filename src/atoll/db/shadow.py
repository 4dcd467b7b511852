"""Shadow tables of the cell schema: where `atoll db archive` puts soft-deleted rows.

Every cell table that is soft-deleted (it has ``deleted`` and ``deleted_at``)
gets a ``shadow_<name>`` twin on ``CellBase.metadata``, built here from the live
table so the two never drift: the same columns with the same types and
nullability, and none of the live table's primary key, unique constraints,
foreign keys or defaults.  Keys are left out on purpose: a shadow table is an
append-only record, and a row id may come back after archiving (SQLite reuses
the highest free rowid, MariaDB before 10.2.4 reset AUTO_INCREMENT on restart),
so the same id can be archived twice.  The live table's indexes (and its
unique constraints) become plain indexes, so an operator can still look a
server up in ``shadow_instances`` by uuid.

``atoll.db.cell_models`` imports this module at its end, so the shadow tables
exist whenever the models do (Alembic's autogenerate sees them; a change to a
live table shows up as the same change to its shadow).
"""

from __future__ import annotations

from sqlalchemy import Column, Index, MetaData, Table, UniqueConstraint

from atoll.db.cell_models import CellBase

SHADOW_PREFIX = "shadow_"
# identifiers longer than this are refused by PostgreSQL (63) and MySQL (64)
_MAX_NAME = 63


def is_soft_deleted(table: Table) -> bool:
    return (
        not table.name.startswith(SHADOW_PREFIX)
        and "deleted" in table.c
        and "deleted_at" in table.c
    )


def shadow_name(name: str) -> str:
    return f"{SHADOW_PREFIX}{name}"


def _index_name(shadow: str, columns: list[str]) -> str:
    name = f"ix_{shadow}_{'_'.join(columns)}"
    return name if len(name) <= _MAX_NAME else name[:_MAX_NAME]


def _build(table: Table, metadata: MetaData) -> Table:
    name = shadow_name(table.name)
    existing = metadata.tables.get(name)
    if existing is not None:
        return existing
    columns = [
        Column(col.name, col.type, nullable=col.nullable, autoincrement=False)
        for col in table.columns
    ]
    shadow = Table(name, metadata, *columns)
    keys = [tuple(col.name for col in index.columns) for index in table.indexes]
    keys += [
        tuple(col.name for col in con.columns)
        for con in table.constraints
        if isinstance(con, UniqueConstraint)
    ]
    keys += [(col.name,) for col in table.columns if col.unique]
    for names in sorted({k for k in keys if k}):
        Index(_index_name(name, list(names)), *(shadow.c[n] for n in names))
    return shadow


def soft_deleted_tables(metadata: MetaData | None = None) -> list[Table]:
    """The live cell tables that are soft-deleted, in name order."""
    metadata = metadata if metadata is not None else CellBase.metadata
    return [t for _name, t in sorted(metadata.tables.items()) if is_soft_deleted(t)]


def register(metadata: MetaData | None = None) -> dict[str, Table]:
    """Add (once) a shadow twin of every soft-deleted table; live name -> shadow table."""
    metadata = metadata if metadata is not None else CellBase.metadata
    return {t.name: _build(t, metadata) for t in soft_deleted_tables(metadata)}


SHADOW_TABLES: dict[str, Table] = register()


def shadow_of(name: str) -> Table:
    """The shadow table of the live cell table ``name`` (KeyError for one that has none)."""
    return SHADOW_TABLES[name]
