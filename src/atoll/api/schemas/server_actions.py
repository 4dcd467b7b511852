"""Bodies of POST /servers/{id}/action: one key naming the action."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Reboot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["SOFT", "HARD", "soft", "hard"]


class Resize(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    flavorRef: str | int
    disk_config: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")


class Migrate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str | None = Field(None, min_length=1, max_length=255)
