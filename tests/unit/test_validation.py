"""Validation errors located as the client wrote its body, for every kind of union field (not only the API's
`narration`): the member the value's JSON type picks, the member's name left out of the location."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from serve_app.videos.validation import client_errors

pytestmark = pytest.mark.unit


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int = Field(ge=0)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: str | int = "auto"
    items: list[int | Inner] | None = None
    pick: list[str] | Inner | None = None
    plain: float | None = None  # nullable, not a union: pydantic names no member


def located(body: dict[str, Any]) -> list[tuple[tuple, str, str]]:
    with pytest.raises(ValidationError) as raised:
        Body.model_validate(body)
    return [(error["loc"], error["type"], error["msg"]) for error in client_errors(Body, raised.value)]


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"pick": {"n": -1}}, [(("pick", "n"), "greater_than_equal")]),
        ({"pick": {"n": 1, "m": 2}}, [(("pick", "m"), "extra_forbidden")]),
        ({"pick": ["a", 2]}, [(("pick", 1), "string_type")]),
        ({"items": [1, {"n": -1}]}, [(("items", 1, "n"), "greater_than_equal")]),
        ({"items": [1, "x"]}, [(("items", 1), "union_type")]),
        ({"size": 1.5}, [(("size",), "int_from_float")]),  # a number: the integer member's own reason
        ({"size": [1]}, [(("size",), "union_type")]),
        ({"plain": "x"}, [(("plain",), "float_parsing")]),
        # Keys spelled like pydantic's member names are keys like any other.
        (
            {"pick": {"Inner": {"n": 1}, "n": -1}},
            [(("pick", "n"), "greater_than_equal"), (("pick", "Inner"), "extra_forbidden")],
        ),
        (
            {"pick": {"list[str]": 1}},
            [(("pick", "n"), "missing"), (("pick", "list[str]"), "extra_forbidden")],
        ),
    ],
)
def test_errors_name_the_member_of_the_values_type_without_its_name(body, expected):
    assert [(loc, kind) for loc, kind, _ in located(body)] == expected


def test_a_value_no_member_takes_is_one_error_listing_what_the_field_takes():
    [(loc, kind, message)] = located({"pick": 3})
    assert (loc, kind, message) == (("pick",), "union_type", "Input should be a list, an object or null")
    [(_, _, message)] = located({"size": {"a": 1}})
    assert message == "Input should be a string or an integer"


def test_a_validators_reason_is_shown_without_pydantics_prefix():
    class Checked(BaseModel):
        value: int

        def model_post_init(self, _: Any) -> None:
            if self.value > 3:
                raise ValueError("at most 3")

    with pytest.raises(ValidationError) as raised:
        Checked.model_validate({"value": 5})
    assert client_errors(Checked, raised.value)[0]["msg"] == "at most 3"
