"""Pydantic's validation errors located as the client wrote its body.

A field that takes one of several types (a union, e.g. ``narration``: true, false or an object) fails in
pydantic once per member, each error under the member's name: ``{"narration": {"voice": "xx-nope"}}`` gives
``narration.bool: Input should be a valid boolean`` and ``narration.NarrationOptions.voice: ...``, in that
order, so the first error named a field the client never wrote. ``client_errors`` keeps the errors of the
member the client meant, the one that takes the value's JSON type, and drops the member's name from each
location: ``narration.voice``. Which parts of a location name a member is read from the model's JSON
schema, never from the body, so a body whose keys look like member names cannot mislead it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from pydantic import BaseModel, ValidationError

# Errors that say a member does not take the value's type at all (pydantic's error types). A member that
# takes it fails with anything else, or deeper inside the value.
_WRONG_TYPE_SUFFIXES = ("_type", "_parsing")
_WRONG_TYPE = {"none_required", "is_instance_of", "is_subclass_of"}

_KINDS = {
    "boolean": "a boolean",
    "object": "an object",
    "array": "a list",
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "null": "null",
}


def client_errors(model: type[BaseModel], exc: ValidationError) -> list[dict[str, Any]]:
    """``exc``'s errors (from validating a ``model``) as the body names its fields, in their order.

    At each union field: the errors of the members that take the value's JSON type, located without the
    member's name; where no member takes it, one error at the field that lists the types it takes.
    ``Value error, `` (pydantic's prefix to a validator's reason) is left out of the messages.
    """
    schema = _schema(model)
    found: list[tuple[dict[str, Any], list[_Union], _Union | None]] = []
    for error in exc.errors(include_url=False):
        loc, crossed = _without_members(schema, tuple(error["loc"]))
        message = error["msg"].removeprefix("Value error, ")
        # The union whose member refused the value's type, if this error is such a refusal.
        refusal = next((union for union in crossed if union.at_member and _wrong_type(error)), None)
        found.append((dict(error) | {"loc": loc, "msg": message}, crossed, refusal))
    # The unions where some member took the value: their refusals are the other members', not the client's.
    taken = {union.where for _, crossed, refusal in found for union in crossed if union != refusal}
    errors: list[dict[str, Any]] = []
    reported: set[tuple[Any, ...]] = set()
    for client_error, _, refusal in found:
        if refusal is None:
            errors.append(client_error)
        elif refusal.where not in taken and refusal.where not in reported:
            reported.add(refusal.where)
            errors.append(client_error | {"type": "union_type", "msg": f"Input should be {refusal.takes}"})
    return errors


@dataclass(frozen=True)
class _Union:
    """A union field an error's location crosses."""

    where: tuple[Any, ...]  # the field's location, as the client wrote it
    at_member: bool  # the location ends at the member's name: the member refused the value itself
    takes: str  # the JSON types the field takes, in words: 'a boolean, an object or null'


def _wrong_type(error: Any) -> bool:
    kind = error["type"]
    return kind in _WRONG_TYPE or kind.endswith(_WRONG_TYPE_SUFFIXES)


@cache
def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


def _without_members(schema: dict[str, Any], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], list[_Union]]:
    """``loc`` without the names pydantic gives union members, and the unions it crosses."""
    node: dict[str, Any] | None = schema
    kept: list[Any] = []
    crossed = []
    index = 0
    while index < len(loc):
        members = _members(schema, node)
        if len(members) > 1:
            # loc[index] names a member: leave it out, and follow the member the next part reaches into.
            crossed.append(_Union(tuple(kept), index == len(loc) - 1, _kinds(schema, node)))
            following = loc[index + 1] if index + 1 < len(loc) else None
            node = next((member for member in members if _reached_by(member, following)), None)
        else:
            kept.append(loc[index])
            node = _child(schema, members[0] if members else None, loc[index])
        index += 1
    return tuple(kept), crossed


def _resolve(schema: dict[str, Any], node: dict[str, Any] | None) -> dict[str, Any] | None:
    """``node`` with its ``$ref`` followed (pydantic's JSON schema keeps models in ``$defs``)."""
    while node is not None and "$ref" in node:
        node = schema.get("$defs", {}).get(node["$ref"].rsplit("/", 1)[-1])
    return node


def _choices(schema: dict[str, Any], node: dict[str, Any] | None) -> list[dict[str, Any]]:
    """What ``node`` may be: itself, or each choice of a union (null included)."""
    node = _resolve(schema, node)
    if node is None:
        return []
    found = (_resolve(schema, choice) for choice in node.get("anyOf") or node.get("oneOf") or [node])
    return [choice for choice in found if choice is not None]


def _members(schema: dict[str, Any], node: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The choices of ``node`` but null: one for most fields (pydantic names no member of ``X | None``),
    several for a union."""
    return [choice for choice in _choices(schema, node) if choice.get("type") != "null"]


def _child(schema: dict[str, Any], node: dict[str, Any] | None, part: Any) -> dict[str, Any] | None:
    """The schema of ``node``'s field or item ``part``."""
    node = _resolve(schema, node)
    if node is None:
        return None
    if isinstance(part, int):
        return node.get("items")
    return node.get("properties", {}).get(part)


def _reached_by(member: dict[str, Any], part: Any) -> bool:
    """Whether the next part of a location (a key, an index, or None at its end) reaches into ``member``."""
    if part is None:
        return False
    return member.get("type") == ("array" if isinstance(part, int) else "object")


def _kinds(schema: dict[str, Any], node: dict[str, Any] | None) -> str:
    """The JSON types a union takes, in words: 'a boolean, an object or null'."""
    words = [_KINDS.get(choice.get("type", ""), "another value") for choice in _choices(schema, node)]
    kinds = list(dict.fromkeys(words))
    return ", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0]
