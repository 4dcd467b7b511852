"""Request bodies of the compute API, one module per resource (named like its router).

This package module holds the field types they share, with Nova's rules:

- ``Strict`` is the base model: unknown keys are refused ("Additional
  properties are not allowed ('x' was unexpected)"), as Nova's schemas do;
- integers accept JSON integers and strings of digits, never booleans or
  fractions (``Int``, ``PositiveInt``, ``NonNegativeInt``, ``QuotaInt``);
- ``Name`` is 1-255 characters without leading or trailing whitespace or
  control characters;
- ``Bool`` accepts JSON booleans and Nova's strings ("true", "False", "1", "yes", ...).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from annotated_types import Interval
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

DB_MAX_INT = 2**31 - 1

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_TRUE = {"1", "t", "true", "on", "y", "yes"}
_FALSE = {"0", "f", "false", "off", "n", "no"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=False)


def _integer(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not of type 'integer'")
    if isinstance(value, float):
        raise ValueError(f"{value!r} is not of type 'integer'")
    if isinstance(value, str):
        text = value.strip()
        if not re.fullmatch(r"-?[0-9]+", text):
            raise ValueError(f"{value!r} is not of type 'integer'")
        return int(text)
    return value


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError(f"{value!r} is not of type 'boolean'")


def _name(value: str) -> str:
    if value != value.strip():
        raise ValueError("Leading or trailing whitespace is not allowed")
    if _CONTROL.search(value):
        raise ValueError("Control characters are not allowed")
    return value


Int = Annotated[int, BeforeValidator(_integer)]
PositiveInt = Annotated[int, Interval(ge=1, le=DB_MAX_INT), BeforeValidator(_integer)]
NonNegativeInt = Annotated[int, Interval(ge=0, le=DB_MAX_INT), BeforeValidator(_integer)]
QuotaInt = Annotated[int, Interval(ge=-1, le=DB_MAX_INT), BeforeValidator(_integer)]
Bool = Annotated[bool, BeforeValidator(_boolean)]
Name = Annotated[str, Field(min_length=1, max_length=255), AfterValidator(_name)]
