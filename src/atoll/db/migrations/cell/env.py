"""Alembic environment of the cell migration line."""

from alembic import context

from atoll.db.migrate import run_env

run_env(context)
