"""Hypervisor drivers: the interface the compute manager uses, and its implementations.

Importing this package registers the fault points of every built-in driver.
"""

from __future__ import annotations

from pathlib import Path

from atoll.virt import power_state
from atoll.virt.driver import HostResources, VirtDriver
from atoll.virt.sim import SimDriver

DRIVERS: dict[str, type[VirtDriver]] = {"sim": SimDriver}

__all__ = ["DRIVERS", "HostResources", "SimDriver", "VirtDriver", "load_driver", "power_state"]


def load_driver(name: str, host: str, state_dir: Path, resources: HostResources) -> VirtDriver:
    """Create the driver called ``name`` for ``host``; ValueError for an unknown name."""
    try:
        driver_class = DRIVERS[name]
    except KeyError:
        raise ValueError(
            f"unknown virt driver {name!r}; available: {', '.join(sorted(DRIVERS))}"
        ) from None
    return driver_class(host, Path(state_dir), resources)
