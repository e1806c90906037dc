"""Pydantic's validation errors as tileserver's messages: 'yaml.path: what is wrong', with
"did you mean" for an unknown key and where an inherited value was set."""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ValidationError


def describe(value: Any) -> str:
    """A value as a message shows it: its kind, and its text where it is short."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{type(value).__name__} {value!r}"


def path_of(base: str, loc: Sequence[int | str]) -> str:
    """base + loc in the configuration's notation: layers.osm.geoms[0].sql."""
    text = base
    for step in loc:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            text = f"{text}.{step}" if text else str(step)
    return text


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds (through Optional, Annotated, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _model_of(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_of(arg)
            if found is not None:
                return found
    return None


def _step(annotation: Any, step: int | str) -> Any:
    """The annotation one step of a location further (a field, a list item, a dict entry)."""
    model = _model_of(annotation)
    if model is not None and isinstance(step, str) and step in model.model_fields:
        return model.model_fields[step].annotation
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _step(typing.get_args(annotation)[0], step)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _step(arg, step)
            if found is not None:
                return found
        return None
    if origin is list and isinstance(step, int):
        return typing.get_args(annotation)[0]
    if origin is dict and isinstance(step, str):
        return typing.get_args(annotation)[1]
    return None


def allowed_keys(model: type[BaseModel], loc: Sequence[int | str]) -> list[str]:
    """The keys of the section at loc (its fields, those without effect left out)."""
    annotation: Any = model
    for step in loc:
        annotation = _step(annotation, step)
    found = _model_of(annotation)
    if found is None:
        return []
    return sorted(
        name
        for name, field in found.model_fields.items()
        if not isinstance(field.json_schema_extra, dict)
        or not any(str(k).startswith("x-") for k in field.json_schema_extra)
    )


def unknown_key(key: str, allowed: Sequence[str]) -> str:
    hint = difflib.get_close_matches(key, sorted(allowed), n=1)
    did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ""
    return f"unknown key{did_you_mean} (allowed: {', '.join(sorted(allowed))})"


_EXPECTED = {
    "bool_type": "true or false",
    "int_type": "an integer",
    "int_from_float": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def message_of(error: Mapping[str, Any], model: type[BaseModel]) -> str:
    """The text (without the path) of one pydantic error on a `model` document."""
    kind, value, ctx = error["type"], error.get("input"), error.get("ctx") or {}
    loc = error["loc"]
    if kind == "missing":
        return "missing required key"
    if kind == "extra_forbidden":
        return unknown_key(str(loc[-1]), allowed_keys(model, loc[:-1]))
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {_number(ctx['ge'])}, got {_number(value)}"
    if kind == "greater_than":
        return f"must be greater than {_number(ctx['gt'])}, got {_number(value)}"
    if kind == "less_than_equal":
        return f"must be at most {_number(ctx['le'])}, got {_number(value)}"
    return str(error["msg"])


def _without_union_branches(loc: Sequence[int | str]) -> tuple[int | str, ...]:
    """Pydantic names the branch of a union in the location ('list[str]', 'str'): drop it."""
    return tuple(
        step
        for step in loc
        if not (isinstance(step, str) and ("[" in step or step in ("str", "int", "float", "bool")))
    )


def _scalars(annotation: Any) -> str | None:
    """What a list or mapping of scalars is expected to be, for its message (None for
    anything else): one message at its key, not one per item."""
    text = repr(annotation)
    if "Doc" in text:
        return None
    if "list[" in text and "float" in text:
        return "a non-empty list of numbers"
    if "list[" in text:
        return "a list of strings"
    if "dict[" in text:
        return "a mapping of names to strings"
    return None


_COLLECTIONS = {
    "DimensionDoc": "a list of dimensions",
    "GeomDoc": "a list of {file: ...} or {sql: ...}",
}


def _class_names(annotation: Any) -> set[str]:
    """The names of the classes an annotation is made of (`list[GeomDoc] | None`: GeomDoc)."""
    if isinstance(annotation, type):
        return {annotation.__name__}
    names: set[str] = set()
    for arg in typing.get_args(annotation):
        names |= _class_names(arg)
    return names


def _value_at(data: Any, loc: Sequence[int | str]) -> Any:
    for step in loc:
        try:
            data = data[step]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def messages_of(
    exc: ValidationError,
    model: type[BaseModel],
    base: str,
    data: Any,
    origin: Mapping[str, str] | None = None,
) -> list[str]:
    """'path: message' for each error, once per path (a union reports each branch: the
    first branch's message is kept). origin: the section's keys inherited from elsewhere
    ('layer_default', 'defaults'), named after the message."""
    found: dict[str, str] = {}
    for error in exc.errors():
        loc = _without_union_branches(error["loc"])
        text = ""
        annotation: Any = model
        for depth, step in enumerate(loc):
            annotation = _step(annotation, step)
            expected = _scalars(annotation)
            if expected is None and error["type"] in _EXPECTED and depth == len(loc) - 1:
                # A list of those documents (the entry itself is a mapping expected).
                inner = set() if isinstance(annotation, type) else _class_names(annotation)
                expected = next((v for k, v in _COLLECTIONS.items() if k in inner), None)
            if expected is not None and error["type"] != "missing":
                loc = loc[: depth + 1]
                text = f"expected {expected}, got {describe(_value_at(data, loc))}"
                break
        if not text:
            text = message_of({**error, "loc": loc}, model)
            if error["type"] == "missing" and len(loc) == 1 and not base:
                text = "missing required section"
        path = path_of(base, loc)
        if path in found:
            continue
        if origin and loc and str(loc[0]) in origin:
            text += f" (set in {origin[str(loc[0])]})"
        found[path] = text
    return [f"{path}: {text}" for path, text in found.items()]
