"""Request bodies of ``/os-services``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from atoll.api.schemas import Bool, Strict

Reason = Annotated[str, Field(min_length=1, max_length=255)]
HostName = Annotated[str, Field(min_length=1, max_length=255)]


class ServiceUpdate(Strict):
    """``PUT /os-services/{uuid}`` (2.53+)."""

    status: Literal["enabled", "disabled"] | None = None
    disabled_reason: Reason | None = None
    forced_down: Bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ServiceUpdate:
        if self.status is None and self.forced_down is None:
            raise ValueError("At least one of 'status' and 'forced_down' must be given.")
        if self.disabled_reason is not None and self.status != "disabled":
            raise ValueError(
                "Specifying 'disabled_reason' is only valid with 'status': 'disabled'."
            )
        return self


class ServiceHost(Strict):
    """``PUT /os-services/enable`` and ``/disable`` (before 2.53)."""

    host: HostName
    binary: HostName


class ServiceDisableLogReason(ServiceHost):
    """``PUT /os-services/disable-log-reason`` (before 2.53)."""

    disabled_reason: Reason


class ServiceForceDown(ServiceHost):
    """``PUT /os-services/force-down`` (2.11 to 2.52)."""

    forced_down: Bool
