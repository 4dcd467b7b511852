"""Request bodies of ``/flavors`` and ``/flavors/{id}/os-extra_specs``."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, RootModel, field_validator

from atoll.api.schemas import Bool, Name, NonNegativeInt, PositiveInt, Strict

FLAVOR_ID_RE = re.compile(r"^(?! )[a-zA-Z0-9. _-]+(?<! )$")
EXTRA_SPEC_KEY_RE = re.compile(r"^[a-zA-Z0-9-_:. /]{1,255}$")


def _flavor_id(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a valid flavor id")
    if isinstance(value, int):
        return str(value)
    return value


def _check_flavor_id(value: str | None) -> str | None:
    if value is not None and not FLAVOR_ID_RE.match(value):
        raise ValueError(
            "Only alphanumeric characters, hyphens, underscores, spaces and dots are "
            "allowed, without leading or trailing spaces"
        )
    return value


def _swap(value: Any) -> Any:
    return 0 if value == "" else value


FlavorId = Annotated[
    str | None,
    BeforeValidator(_flavor_id),
    Field(default=None, min_length=1, max_length=255),
    AfterValidator(_check_flavor_id),
]
Description = Annotated[str | None, Field(max_length=65535)]


class FlavorCreate(Strict):
    name: Name
    id: FlavorId = None
    ram: PositiveInt
    vcpus: PositiveInt
    disk: NonNegativeInt
    ephemeral: NonNegativeInt = Field(0, alias="OS-FLV-EXT-DATA:ephemeral")
    swap: Annotated[NonNegativeInt, BeforeValidator(_swap)] = 0
    rxtx_factor: float = Field(1.0, gt=0, le=3.40282e38)
    is_public: Bool = Field(True, alias="os-flavor-access:is_public")

    @field_validator("rxtx_factor", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not of type 'number'")
        return value


class FlavorCreateV255(FlavorCreate):
    description: Description = None


class CreateFlavorRequest(Strict):
    flavor: FlavorCreate


class CreateFlavorRequestV255(Strict):
    flavor: FlavorCreateV255


class FlavorUpdate(Strict):
    description: Description


class UpdateFlavorRequest(Strict):
    flavor: FlavorUpdate


def _spec_value(value: Any) -> Any:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return str(value)
    return value


SpecValue = Annotated[str, BeforeValidator(_spec_value), Field(max_length=255)]


def _check_keys(specs: dict[str, str]) -> dict[str, str]:
    for key in specs:
        if not EXTRA_SPEC_KEY_RE.match(key):
            raise ValueError(
                f"Extra spec key {key!r} is invalid: use 1-255 characters from "
                "letters, digits and '-_:. /'"
            )
    return specs


ExtraSpecs = Annotated[dict[str, SpecValue], AfterValidator(_check_keys)]


class ExtraSpecsRequest(Strict):
    extra_specs: ExtraSpecs


class SingleSpec(RootModel[ExtraSpecs]):
    """The body of ``PUT .../os-extra_specs/{key}``: ``{"<key>": "<value>"}``."""
