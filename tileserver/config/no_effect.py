"""Keys that TileCloud-chain reads and tileserver does not (marked in the document's
models with NO_EFFECT_MARK): each gets one warning, whichever layers or sections set it,
so that a TileCloud-chain file loads unchanged and says what it asks for in vain."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from tileserver.config import sections as S
from tileserver.config.doc_fields import NO_EFFECT_MARK
from tileserver.config.document import Document


def keys_without_effect(doc: BaseModel, path: str, where: dict[str, list[str]]) -> None:
    """Records the keys without effect set in doc (and its sections): where[key path] =
    the layers (or [path]) that set it, for one warning per key."""
    for name, field in type(doc).model_fields.items():
        if name not in doc.model_fields_set:
            continue
        extra = field.json_schema_extra
        if isinstance(extra, dict) and NO_EFFECT_MARK in extra:
            where.setdefault(f"{path}.{name}" if path else name, []).append(path)
        value = getattr(doc, name)
        if isinstance(value, BaseModel):
            keys_without_effect(value, f"{path}.{name}" if path else name, where)


_NO_EFFECT_SECTIONS = tuple(
    k for k, f in Document.model_fields.items()
    if isinstance(f.json_schema_extra, dict) and NO_EFFECT_MARK in f.json_schema_extra
)  # fmt: skip


def warn_without_effect(
    errors: S.Errors,
    layer_keys: Mapping[str, list[str]],
    sections: Mapping[str, Any],
    data: Mapping[str, Any],
) -> None:
    """One warning per key without effect: set in layers (`layer_keys`: the key path ->
    the layers that set it, from `keys_without_effect`), in the document's sections, or a
    section that does nothing here."""
    for key, names in sorted(layer_keys.items()):
        errors.warn(
            f"layers.{key}" if len(names) > 1 else f"layers.{names[0]}.{key}",
            f"{_said(key)}" + (f" (layers {', '.join(names)})" if len(names) > 1 else ""),
        )
    for key, value in sections.items():
        if isinstance(value, BaseModel):
            found: dict[str, list[str]] = {}
            keys_without_effect(value, key, found)
            for path in found:
                errors.warn(path, _said(path))
    for key in _NO_EFFECT_SECTIONS:
        if key in data:
            errors.warn(key, _said(key))


_LAYER_WARNING = re.compile(r"layers\.([^.:]+)\.([^:]+): (.*)", re.DOTALL)


def grouped(warnings: list[str]) -> list[str]:
    """One warning for the layers that get the same one at the same key:
    'layers.KEY: message (layers a, b)', where the first of them was."""
    layers: dict[tuple[str, str], list[str]] = {}
    for warning in warnings:
        match = _LAYER_WARNING.fullmatch(warning)
        if match is not None:
            layers.setdefault((match.group(2), match.group(3)), []).append(match.group(1))
    out = []
    for warning in warnings:
        match = _LAYER_WARNING.fullmatch(warning)
        names = layers.get((match.group(2), match.group(3)), []) if match else []
        if len(names) < 2:
            out.append(warning)
        elif match is not None and match.group(1) == names[0]:
            out.append(f"layers.{match.group(2)}: {match.group(3)} (layers {', '.join(names)})")
    return out


def _said(key: str) -> str:
    leaf = key.rsplit(".", 1)[-1]
    return f"TileCloud-chain's `{leaf}` has no effect in tileserver; ignored"
