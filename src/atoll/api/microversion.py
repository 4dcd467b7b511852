"""Compute API microversions: parse what the client asked for, compare, gate.

A request names its version in ``OpenStack-API-Version: compute 2.53`` (several
services may share the header, comma separated: ``compute 2.53, volume 3.10``)
or, the older way, ``X-OpenStack-Nova-API-Version: 2.53``.  ``latest`` means
``MAX_VERSION``.  No header at all means ``MIN_VERSION`` (2.1), like Nova.

A malformed version is a 400 and one outside ``[MIN_VERSION, MAX_VERSION]`` a
406, both with Nova's messages.  The API middleware (``atoll.api.app``) parses
the header once per request, stores the result in ``request.state.api_version``
and echoes it in every response (``response_headers``); routers get it through
``atoll.api.deps.VersionDep``.

Using a version in code::

    ver = APIVersion.parse("2.53")
    ver >= "2.47"                 # compares with strings, tuples and versions
    ver.matches("2.3", "2.89")    # inclusive range; max may be None (no upper bound)
    require(ver, "2.55")          # 404 below 2.55, as Nova does for a method
                                  # that does not exist at the asked version
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from atoll.exceptions import AtollError, BadRequest, NotFound

SERVICE_TYPE = "compute"
HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"
VARY = f"{HEADER}, {LEGACY_HEADER}"

_VERSION_RE = re.compile(r"^([1-9]\d*)\.([1-9]\d*|0)$")


class VersionNotAcceptable(AtollError):
    """The asked version is outside the range this API serves."""

    code = 406
    title = "computeFault"


@functools.total_ordering
class APIVersion:
    """A ``major.minor`` version, comparable with other versions, ``"2.47"`` or ``(2, 47)``."""

    __slots__ = ("major", "minor")

    def __init__(self, major: int, minor: int) -> None:
        self.major = major
        self.minor = minor

    @classmethod
    def parse(cls, text: str) -> APIVersion:
        """``"2.53"`` -> APIVersion(2, 53); BadRequest (Nova's message) on anything else."""
        match = _VERSION_RE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise BadRequest(
                f"API Version String {text} is of invalid format. "
                "Must be of format MajorNum.MinorNum."
            )
        return cls(int(match.group(1)), int(match.group(2)))

    @classmethod
    def coerce(cls, other: Any) -> APIVersion:
        if isinstance(other, APIVersion):
            return other
        if isinstance(other, str):
            return cls.parse(other)
        if isinstance(other, tuple) and len(other) == 2:
            return cls(int(other[0]), int(other[1]))
        raise TypeError(f"cannot compare an API version with {other!r}")

    def _key(self) -> tuple[int, int]:
        return (self.major, self.minor)

    def __eq__(self, other: object) -> bool:
        try:
            return self._key() == APIVersion.coerce(other)._key()
        except (TypeError, BadRequest):
            return NotImplemented

    def __lt__(self, other: Any) -> bool:
        return self._key() < APIVersion.coerce(other)._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __repr__(self) -> str:
        return f"APIVersion('{self}')"

    def matches(self, min_version: Any = None, max_version: Any = None) -> bool:
        """True when ``min_version <= self <= max_version`` (either bound may be None)."""
        if min_version is not None and self < min_version:
            return False
        return not (max_version is not None and self > max_version)


MIN_VERSION = APIVersion(2, 1)
MAX_VERSION = APIVersion(2, 100)


def _from_openstack_header(value: str) -> str | None:
    """The compute entry of ``OpenStack-API-Version`` (None when it names other services only)."""
    for part in value.split(","):
        words = part.strip().split()
        if not words:
            continue
        if words[0].lower() == SERVICE_TYPE:
            if len(words) != 2:
                raise BadRequest(
                    f"API Version String {part.strip()} is of invalid format. "
                    "Must be of format MajorNum.MinorNum."
                )
            return words[1]
    return None


def from_headers(headers: Mapping[str, str]) -> APIVersion:
    """The version a request asks for (``headers`` is case-insensitive, like Starlette's).

    Raises BadRequest for a malformed version and VersionNotAcceptable for one
    this API does not serve.
    """
    requested: str | None = None
    value = (headers.get(HEADER) or "").strip()
    if value:
        requested = _from_openstack_header(value)
    if requested is None:
        requested = (headers.get(LEGACY_HEADER) or "").strip() or None
    if requested is None:
        return MIN_VERSION
    requested = requested.strip()
    if requested.lower() == "latest":
        return MAX_VERSION
    version = APIVersion.parse(requested)
    if not version.matches(MIN_VERSION, MAX_VERSION):
        raise VersionNotAcceptable(
            f"Version {version} is not supported by the API. "
            f"Minimum is {MIN_VERSION} and maximum is {MAX_VERSION}."
        )
    return version


def response_headers(version: APIVersion) -> dict[str, str]:
    """The headers every compute API response carries for ``version``."""
    return {
        HEADER: f"{SERVICE_TYPE} {version}",
        LEGACY_HEADER: str(version),
        "Vary": VARY,
    }


def require(version: APIVersion, min_version: Any, max_version: Any = None) -> None:
    """NotFound unless ``version`` is in range: the method does not exist at that version."""
    if not version.matches(min_version, max_version):
        raise NotFound("The resource could not be found.")
