"""The compute API's routers, one module per resource (``atoll.api.schemas`` holds
their request bodies under the same names).

Every module exports ``router`` (an ``APIRouter`` whose paths are relative to
``/v2.1``).  ``ROUTERS`` lists them in include order; ``ROOT_ROUTERS`` are
mounted at the root (the version document list).  Modules written elsewhere
(servers and their sub-resources, migrations, atoll's admin endpoints) are
included when they exist.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

CORE_MODULES = (
    "versions",
    "flavors",
    "aggregates",
    "availability_zones",
    "services",
    "hypervisors",
    "keypairs",
    "limits",
    "quota_sets",
    "server_groups",
    "images",
)
OPTIONAL_MODULES = (
    "servers",
    "server_actions",
    "server_subresources",
    "migrations",
    "admin",
    "workflows",
)


def _load(name: str, *, optional: bool) -> ModuleType | None:
    full = f"{__name__}.{name}"
    try:
        return importlib.import_module(full)
    except ModuleNotFoundError as exc:
        if optional and exc.name == full:
            return None
        raise


def _routers() -> list[Any]:
    routers: list[Any] = []
    for name in CORE_MODULES:
        module = _load(name, optional=False)
        assert module is not None
        routers.append(module.router)
    for name in OPTIONAL_MODULES:
        module = _load(name, optional=True)
        if module is not None:
            routers.append(module.router)
    return routers


ROUTERS = _routers()
ROOT_ROUTERS = [importlib.import_module(f"{__name__}.versions").root_router]
