"""Reading what a request carries: one JSON parser for every body and form field, and the create form.

Every failure here is a 400 that names the field; the body's size and time are bounded before any of it
is read (``serve_app.api.guard``).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from starlette.datastructures import UploadFile

from core.errors import BadRequest, bad_value

MAX_JSON_DEPTH = 32  # the deepest request is body > scenes > [i] > scene: far below this
MAX_NUMBER_CHARS = 64  # longer number literals are refused before Python converts them

# Form fields that carry JSON in a form (the OpenAI SDK and vLLM-Omni's clients send every field as one).
JSON_FORM_FIELDS = ("scenes", "input_reference", "narration", "image_reference", "extra_params")
# The form fields of a create that may be files: the first scene's image and a music bed.
CREATE_FILES = ("input_reference", "music")
NESTED_FIELD = re.compile(r"([a-z_]{1,32})\[([a-z_]{1,32})\]")  # `video[id]`, always with fullmatch
MAX_FORM_FIELDS = 48  # the create schema has fewer fields than this
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
MAX_FORM_FIELD_BYTES = 2**20  # a text field; the file part is bounded by limits.max_body_bytes


@dataclass
class CreateBody:
    """A create request as it came: the fields (JSON values) and the uploaded files' bytes by field."""

    fields: dict[str, Any]
    uploads: dict[str, bytes] = field(default_factory=dict)

    @property
    def upload(self) -> bytes | None:
        """The uploaded `input_reference` image, if any."""
        return self.uploads.get("input_reference")


def parse_json(data: bytes | str, param: str) -> Any:
    """Parse JSON text the way every route and form field does.

    Refused with a 400 naming ``param``: invalid UTF-8, invalid syntax, nesting deeper than
    ``MAX_JSON_DEPTH``, number literals longer than ``MAX_NUMBER_CHARS``, and non-finite numbers
    (``NaN``, ``Infinity``, ``1e999``), which JSON itself does not have.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        value = json.loads(
            text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_refuse_constant
        )
    except _Refused as exc:
        raise _invalid(param, str(exc)) from None
    except UnicodeDecodeError:
        raise _invalid(param, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise _invalid(param, f"{exc.msg} at character {exc.pos}") from None
    except RecursionError:
        raise _invalid(param, f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    if _depth(value) > MAX_JSON_DEPTH:
        raise _invalid(param, f"nested deeper than {MAX_JSON_DEPTH} levels")
    return value


async def read_create_body(request: Request, file_fields: tuple[str, ...] = CREATE_FILES) -> CreateBody:
    """A create body, JSON or a form, multipart or urlencoded (the guard has refused every other type).

    ``file_fields``: the form fields that may be files (none for the remix, edit and extension bodies).
    A form field named ``name[key]`` (how the OpenAI SDK sends ``video: {"id": ...}``) becomes ``name: {key: ...}``.
    """
    if request.headers.get("content-type", "").lower().startswith(FORM_TYPES):
        return await _read_form(request, file_fields)
    raw = await request.body()
    # A large body takes tens of milliseconds to parse: off the event loop that answers polls.
    fields = await asyncio.to_thread(parse_json, raw, "body")
    if not isinstance(fields, dict):
        raise BadRequest(
            "body must be a JSON object with at least `prompt`", param="body", code="invalid_json"
        )
    return CreateBody(fields)


async def _read_form(request: Request, file_fields: tuple[str, ...]) -> CreateBody:
    body = CreateBody({})
    # Starlette's own bound on a text part refuses it without saying which part it was: the guard already
    # bounds the whole body (limits.max_body_bytes), and each field is measured below, by name.
    async with request.form(
        max_files=max(1, len(file_fields)), max_fields=MAX_FORM_FIELDS, max_part_size=sys.maxsize
    ) as form:
        for key, value in form.multi_items():
            size = len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0
            if size > MAX_FORM_FIELD_BYTES:
                raise bad_value(
                    key, f"<{size} bytes>", f"a form field holds at most {MAX_FORM_FIELD_BYTES} bytes"
                )
            if key in body.fields or key in body.uploads:
                raise bad_value(key, "<given twice>", "each form field may be given once")
            if isinstance(value, UploadFile):
                if key not in file_fields:
                    allowed = (
                        f"only {' and '.join(file_fields)} may be files"
                        if file_fields
                        else "no field may be a file here"
                    )
                    raise bad_value(key, value.filename, allowed)
                body.uploads[key] = await value.read()
            elif key in JSON_FORM_FIELDS:
                body.fields[key] = await asyncio.to_thread(parse_json, value, key)
            elif (nested := NESTED_FIELD.fullmatch(key)) is not None:
                name, inner = nested.groups()
                group = body.fields.setdefault(name, {})
                if not isinstance(group, dict) or inner in group:
                    raise bad_value(key, "<given twice>", "each form field may be given once")
                group[inner] = value
            else:
                body.fields[key] = value
    return body


class _Refused(ValueError):
    """A literal JSON's grammar allows but the API does not."""


def _parse_int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(literal)} digits")
    return int(literal)


def _parse_float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number of {len(literal)} characters")
    number = float(literal)
    if number in (float("inf"), float("-inf")):
        raise _Refused(f"{literal} is not a finite number")
    return number


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not a number JSON allows")


def _depth(value: Any) -> int:
    """How deeply containers nest in ``value`` (a scalar is 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        if deepest > MAX_JSON_DEPTH:
            return deepest
        stack.extend((child, level + 1) for child in children)
    return deepest


def _invalid(param: str, reason: str) -> BadRequest:
    return BadRequest(f"{param} is not valid JSON: {reason}", param=param, code="invalid_json")
