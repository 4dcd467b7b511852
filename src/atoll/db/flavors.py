"""Flavors as the plain dicts that servers embed (flavor / old_flavor / new_flavor)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from atoll.db.api_models import Flavor
from atoll.db.session import session_scope
from atoll.exceptions import NotFound


def as_dict(flavor: Flavor) -> dict[str, Any]:
    return {
        "id": flavor.id,
        "flavorid": flavor.flavorid,
        "name": flavor.name,
        "memory_mb": flavor.memory_mb,
        "vcpus": flavor.vcpus,
        "root_gb": flavor.root_gb,
        "ephemeral_gb": flavor.ephemeral_gb,
        "swap": flavor.swap,
        "rxtx_factor": flavor.rxtx_factor,
        "extra_specs": {spec.key: spec.value for spec in flavor.extra_specs},
    }


def get(api_db: str, flavor_ref: str) -> dict[str, Any]:
    """By flavor id, or by the last path element of a flavor URL (clients send either)."""
    flavorid = str(flavor_ref).rstrip("/").rsplit("/", 1)[-1]
    with session_scope(api_db) as s:
        row = s.scalar(select(Flavor).where(Flavor.flavorid == flavorid))
        if row is None or row.disabled:
            raise NotFound(f"Flavor {flavorid} could not be found.")
        return as_dict(row)
