"""Bodies of POST /servers/{id}/action: one key naming the action."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class Reboot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["SOFT", "HARD", "soft", "hard"]
