"""`python -m serve_app.config_docs > docs/CONFIG.md`: the config reference, generated from the schema.

A test checks the committed file matches, so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import typing
from typing import Any

from pydantic import BaseModel

from serve_app.config import AppConfig

HEADER = """# Configuration reference

Every field of the application config: the `args` of an application in `serve_config.yaml` (GPU) or
`serve_config.cpu.yaml` (CPU). Ray Serve validates them against `serve_app.config.AppConfig` before any
replica starts; an unknown or out-of-range field fails the deploy with the field's name.
This file is generated: `python -m serve_app.config_docs > docs/CONFIG.md`.
"""


def render() -> str:
    lines = [HEADER]
    _section(AppConfig, "", lines)
    return "\n".join(lines) + "\n"


def _section(model: type[BaseModel], prefix: str, lines: list[str], variant: str = "") -> None:
    title = (f"`{prefix.rstrip('.')}`" if prefix else "Top level") + variant
    doc = (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else ""
    lines += [f"## {title}", ""]
    if doc and not doc.startswith("Usage docs"):
        lines += [doc, ""]
    lines += ["| field | default | meaning |", "|---|---|---|"]
    nested = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested.append((annotation, f"{prefix}{name}.", ""))
            lines.append(f"| `{prefix}{name}` | | {_text(field.description)} (section below) |")
            continue
        variants = _model_variants(annotation)
        if variants:
            # One section per kind (the `video` families), each with its own fields and defaults.
            for kind_model in variants:
                kind = kind_model.model_fields["family"].default
                nested.append((kind_model, f"{prefix}{name}.", f" with `family: {kind}`"))
            lines.append(f"| `{prefix}{name}` | | {_text(field.description)} (a section below per kind) |")
            continue
        default = field.get_default(call_default_factory=True)
        lines.append(f"| `{prefix}{name}` | {_value(default)} | {_text(field.description)} |")
    lines.append("")
    for sub, sub_prefix, variant in nested:
        _section(sub, sub_prefix, lines, variant)


def _model_variants(annotation: Any) -> list[type[BaseModel]]:
    """The models of a union of models (each possibly `Annotated` with a tag); empty for anything else."""
    members = []
    for member in typing.get_args(annotation):
        if typing.get_origin(member) is typing.Annotated:
            member = typing.get_args(member)[0]
        if isinstance(member, type) and issubclass(member, BaseModel) and "family" in member.model_fields:
            members.append(member)
    return members


def _value(value: Any) -> str:
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return f"`{json.dumps(value, ensure_ascii=False)}`"


def _text(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


if __name__ == "__main__":
    print(render(), end="")
