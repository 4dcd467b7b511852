"""The embedded image, volume and network services (standing in for Glance, Cinder, Neutron).

Each is a plain class over the services database (``ServicesBase.metadata``); the
conductor and the computes call them directly.  They return plain dicts with
ISO-8601 timestamps and raise :mod:`atoll.exceptions` errors.
"""

from __future__ import annotations

from atoll.services._common import UNSET
from atoll.services.image import ImageService
from atoll.services.models import ServicesBase
from atoll.services.network import NetworkService
from atoll.services.volume import VolumeService

__all__ = ["UNSET", "ImageService", "NetworkService", "ServicesBase", "VolumeService"]
