"""Alembic environment of the services migration line."""

from alembic import context

from atoll.db.migrate import run_env

run_env(context)
