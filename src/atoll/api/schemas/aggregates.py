"""Request bodies of ``/os-aggregates``."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, model_validator

from atoll.api.schemas import Name, Strict


def _zone(value: str | None) -> str | None:
    if value is not None and ":" in value:
        raise ValueError("An availability zone name may not contain ':'")
    return value


ZoneName = Annotated[Name | None, AfterValidator(_zone)]
MetadataKey = Annotated[str, Field(min_length=1, max_length=255)]
MetadataValue = Annotated[str | None, Field(max_length=255)]


class AggregateCreate(Strict):
    name: Name
    availability_zone: ZoneName = None


class CreateAggregateRequest(Strict):
    aggregate: AggregateCreate


class AggregateUpdate(Strict):
    name: Name | None = None
    availability_zone: ZoneName = None

    @model_validator(mode="after")
    def _not_empty(self) -> AggregateUpdate:
        if not self.model_fields_set:
            raise ValueError("give name and/or availability_zone")
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name may not be null")
        return self


class UpdateAggregateRequest(Strict):
    aggregate: AggregateUpdate


class HostBody(Strict):
    host: Name


class AddHostRequest(Strict):
    add_host: HostBody


class RemoveHostRequest(Strict):
    remove_host: HostBody


class Metadata(Strict):
    metadata: dict[MetadataKey, MetadataValue]


class SetMetadataRequest(Strict):
    set_metadata: Metadata


class ImageRef(Strict):
    id: str


class CacheImagesRequest(Strict):
    cache: Annotated[list[ImageRef], Field(min_length=1)]
