"""Request bodies of the servers resource; pydantic turns violations into clear 400s."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

UUID_PATTERN = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
TAG_PATTERN = r"^[^,/]*$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkRequest(Strict):
    uuid: str | None = Field(None, pattern=UUID_PATTERN)
    port: str | None = Field(None, pattern=UUID_PATTERN)
    fixed_ip: str | None = None
    tag: str | None = Field(None, min_length=1, max_length=60, pattern=TAG_PATTERN)


class BlockDeviceMappingV2(Strict):
    boot_index: int | str | None = None
    uuid: str | None = Field(None, pattern=UUID_PATTERN)
    source_type: Literal["volume", "image", "snapshot", "blank"] | None = None
    destination_type: Literal["volume", "local"] | None = None
    volume_size: int | None = Field(None, ge=1)
    delete_on_termination: bool = False
    device_name: str | None = Field(None, max_length=255)
    disk_bus: str | None = None
    device_type: str | None = None
    guest_format: str | None = None
    tag: str | None = Field(None, min_length=1, max_length=60, pattern=TAG_PATTERN)
    volume_type: str | None = None

    @field_validator("boot_index")
    @classmethod
    def _boot_index(cls, value: int | str | None) -> int | None:
        if value is None or value == "none":
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise ValueError("boot_index must be an integer") from None


class ServerCreate(Strict):
    name: str = Field(min_length=1, max_length=255)
    imageRef: str | None = None
    flavorRef: str | int = Field(...)
    networks: list[NetworkRequest] | Literal["auto", "none"] | None = None
    metadata: dict[str, str] | None = None
    availability_zone: str | None = Field(None, min_length=1, max_length=255)
    block_device_mapping_v2: list[BlockDeviceMappingV2] | None = None
    key_name: str | None = Field(None, min_length=1, max_length=255)
    user_data: str | None = Field(None, max_length=65535)
    config_drive: bool | str | None = None
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    adminPass: str | None = None
    min_count: int = Field(1, ge=1)
    max_count: int | None = Field(None, ge=1)
    return_reservation_id: bool = False
    security_groups: list[dict[str, str]] | None = None
    description: str | None = Field(None, max_length=255)
    tags: list[str] | None = Field(None, max_length=50)
    hostname: str | None = Field(None, min_length=1, max_length=63)
    host: str | None = None
    hypervisor_hostname: str | None = None
    trusted_image_certificates: list[str] | None = None
    OS_DCF_diskConfig: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for key, item in (value or {}).items():
            if not 1 <= len(key) <= 255 or len(item) > 255:
                raise ValueError("metadata keys must be 1-255 characters and values at most 255")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        for tag in value or []:
            if not 1 <= len(tag) <= 60 or "," in tag or "/" in tag:
                raise ValueError(f"invalid tag {tag!r}: 1-60 characters, no ',' or '/'")
        return value


class CreateServerBody(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    server: ServerCreate
    os_scheduler_hints: dict[str, Any] | None = Field(None, alias="os:scheduler_hints")
    os_sch_hnt: dict[str, Any] | None = Field(None, alias="OS-SCH-HNT:scheduler_hints")

    def hints(self) -> dict[str, Any]:
        return dict(self.os_scheduler_hints or self.os_sch_hnt or {})


class ServerUpdate(Strict):
    name: str | None = Field(None, min_length=1, max_length=255)
    description: str | None = Field(None, max_length=255)
    accessIPv4: str | None = None
    accessIPv6: str | None = None
    hostname: str | None = Field(None, min_length=1, max_length=63)
    OS_DCF_diskConfig: Literal["AUTO", "MANUAL"] | None = Field(None, alias="OS-DCF:diskConfig")
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class UpdateServerBody(Strict):
    server: ServerUpdate
