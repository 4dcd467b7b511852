"""Microversion parsing, comparison and negotiation (atoll.api.microversion)."""

from __future__ import annotations

import pytest

from atoll.api.microversion import (
    HEADER,
    LEGACY_HEADER,
    MAX_VERSION,
    MIN_VERSION,
    APIVersion,
    VersionNotAcceptable,
    from_headers,
    require,
    response_headers,
)
from atoll.exceptions import BadRequest, NotFound


class CaseInsensitive(dict[str, str]):
    """Header lookup like Starlette's: case-insensitive."""

    def __init__(self, values: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in values.items()})

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


def headers(**values: str) -> CaseInsensitive:
    names = {"new": HEADER, "legacy": LEGACY_HEADER}
    return CaseInsensitive({names[k]: v for k, v in values.items()})


def test_range() -> None:
    assert str(MIN_VERSION) == "2.1"
    assert str(MAX_VERSION) == "2.100"


def test_parse_and_str() -> None:
    v = APIVersion.parse("2.53")
    assert (v.major, v.minor) == (2, 53)
    assert str(v) == "2.53"
    assert repr(v) == "APIVersion('2.53')"
    assert APIVersion.parse(" 2.0 ") == "2.0"


@pytest.mark.parametrize(
    "text", ["", "2", "2.", ".1", "2.x", "v2.1", "02.1", "2.01", "2.1.1", "-2.1"]
)
def test_parse_rejects_malformed(text: str) -> None:
    with pytest.raises(
        BadRequest, match=r"is of invalid format\. Must be of format MajorNum\.MinorNum\."
    ):
        APIVersion.parse(text)


def test_comparisons_with_strings_tuples_and_versions() -> None:
    v = APIVersion.parse("2.47")
    assert v >= "2.47"
    assert v > "2.9"  # numeric, not lexical
    assert v < "2.100"
    assert v == "2.47"
    assert v == (2, 47)
    assert v != "2.48"
    assert v <= APIVersion(2, 47)
    assert sorted([APIVersion(2, 10), APIVersion(2, 9), APIVersion(2, 100)]) == [
        "2.9",
        "2.10",
        "2.100",
    ]
    assert len({APIVersion(2, 1), APIVersion.parse("2.1")}) == 1
    assert v != "garbage"
    with pytest.raises(TypeError):
        _ = v < 3  # type: ignore[operator]


def test_matches_is_inclusive() -> None:
    v = APIVersion.parse("2.53")
    assert v.matches("2.3", "2.89")
    assert v.matches("2.53", "2.53")
    assert v.matches("2.53")
    assert v.matches(None, "2.53")
    assert not v.matches("2.54")
    assert not v.matches("2.1", "2.52")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({}, "2.1"),
        ({"new": "compute 2.53"}, "2.53"),
        ({"new": "COMPUTE 2.53"}, "2.53"),
        ({"new": "compute latest"}, "2.100"),
        ({"new": "compute Latest"}, "2.100"),
        ({"new": "volume 3.0, compute 2.20"}, "2.20"),
        ({"new": "volume 3.0"}, "2.1"),
        ({"new": "volume 3.0", "legacy": "2.7"}, "2.7"),
        ({"legacy": "2.7"}, "2.7"),
        ({"legacy": "latest"}, "2.100"),
        ({"new": "compute 2.8", "legacy": "2.7"}, "2.8"),
        ({"new": "   ", "legacy": "  "}, "2.1"),
        ({"new": "compute 2.100"}, "2.100"),
    ],
)
def test_from_headers(given: dict[str, str], expected: str) -> None:
    assert str(from_headers(headers(**given))) == expected


@pytest.mark.parametrize("asked", ["3.0", "2.101", "2.0", "1.99"])
def test_out_of_range_is_not_acceptable(asked: str) -> None:
    with pytest.raises(VersionNotAcceptable) as err:
        from_headers(headers(new=f"compute {asked}"))
    assert err.value.code == 406
    assert err.value.message == (
        f"Version {asked} is not supported by the API. Minimum is 2.1 and maximum is 2.100."
    )


@pytest.mark.parametrize("value", ["compute", "compute 2.1 2.2", "compute two", "compute 2"])
def test_malformed_headers_are_bad_requests(value: str) -> None:
    with pytest.raises(BadRequest):
        from_headers(headers(new=value))


def test_response_headers() -> None:
    assert response_headers(APIVersion(2, 53)) == {
        "OpenStack-API-Version": "compute 2.53",
        "X-OpenStack-Nova-API-Version": "2.53",
        "Vary": "OpenStack-API-Version, X-OpenStack-Nova-API-Version",
    }


def test_require_is_a_404_outside_the_range() -> None:
    require(APIVersion(2, 55), "2.55")
    require(APIVersion(2, 87), "2.1", "2.87")
    with pytest.raises(NotFound):
        require(APIVersion(2, 54), "2.55")
    with pytest.raises(NotFound):
        require(APIVersion(2, 88), "2.1", "2.87")
