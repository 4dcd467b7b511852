"""Resource accounting: providers, inventories, consumers and allocations.

atoll's own placement service, with OpenStack Placement's data model and the
shapes of its read API (`atoll.placement.router`), written for speed: an
allocation write is a handful of SQL statements in one short transaction.
"""

from atoll.placement.errors import (
    AllocationConstraintViolated,
    ConsumerGenerationConflict,
    InsufficientCapacity,
    InvalidAllocationRequest,
    InvalidInventory,
    InventoryInUse,
    ProviderInUse,
    ProviderNameConflict,
    ResourceProviderGenerationConflict,
    ResourceProviderNotFound,
)
from atoll.placement.models import PlacementBase
from atoll.placement.service import (
    AllocationRequest,
    ConsumerAllocations,
    Inventory,
    Placement,
    ProviderCapacity,
    ProviderView,
)

__all__ = [
    "AllocationConstraintViolated",
    "AllocationRequest",
    "ConsumerAllocations",
    "ConsumerGenerationConflict",
    "InsufficientCapacity",
    "InvalidAllocationRequest",
    "InvalidInventory",
    "Inventory",
    "InventoryInUse",
    "Placement",
    "PlacementBase",
    "ProviderCapacity",
    "ProviderInUse",
    "ProviderNameConflict",
    "ProviderView",
    "ResourceProviderGenerationConflict",
    "ResourceProviderNotFound",
]
