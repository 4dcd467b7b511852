"""What placement refuses, and why, in words an operator can act on.

Every error subclasses an `atoll.exceptions` class, so the API maps it to the
right HTTP status without a translation table: unknown things are 404s, clashes
with the current state are 409s, malformed input is a 400.
"""

from __future__ import annotations

from atoll.exceptions import BadRequest, ConcurrentUpdate, Conflict, NotFound


class ResourceProviderNotFound(NotFound):
    """No resource provider has this uuid."""

    def __init__(self, uuid: str, message: str | None = None) -> None:
        super().__init__(message or f"No resource provider with uuid {uuid} found")
        self.uuid = uuid


class InsufficientCapacity(Conflict):
    """A provider has not enough free resources of a class for an allocation."""

    def __init__(
        self,
        message: str,
        *,
        provider_uuid: str = "",
        resource_class: str = "",
        requested: int = 0,
        free: int = 0,
    ) -> None:
        super().__init__(message)
        self.provider_uuid = provider_uuid
        self.resource_class = resource_class
        self.requested = requested
        self.free = free


class AllocationConstraintViolated(InsufficientCapacity):
    """An amount breaks a provider's min_unit, max_unit or step_size, or names a
    resource class the provider has no inventory of.

    A subclass of `InsufficientCapacity` because a caller's answer is the same:
    this provider cannot take this request, try another one.
    """


class InvalidAllocationRequest(BadRequest):
    """An allocation request is malformed (for instance a negative amount)."""


class InvalidInventory(BadRequest):
    """An inventory record is inconsistent (for instance reserved > total)."""


class ConsumerGenerationConflict(Conflict):
    """The consumer's allocations changed since the caller read them (or it has
    allocations when the caller expected none)."""


class ResourceProviderGenerationConflict(ConcurrentUpdate):
    """Other writers kept changing a provider; the write was retried and gave up."""


class ProviderInUse(Conflict):
    """A provider still has allocations (or child providers) and cannot be deleted."""


class InventoryInUse(Conflict):
    """An inventory class still has allocations and cannot be removed."""


class ProviderNameConflict(Conflict):
    """Another resource provider already has this name."""
