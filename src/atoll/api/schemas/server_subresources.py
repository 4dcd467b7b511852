"""Bodies of the server sub-resources (volume attachments, tags)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from atoll.api.schemas.servers import TAG_PATTERN, UUID_PATTERN


class VolumeAttachmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    volumeId: str = Field(pattern=UUID_PATTERN)
    device: str | None = Field(None, max_length=255)
    tag: str | None = Field(None, min_length=1, max_length=60, pattern=TAG_PATTERN)
    delete_on_termination: bool = False


class VolumeAttachmentBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    volumeAttachment: VolumeAttachmentCreate


class TagsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tags: list[str] = Field(max_length=50)
