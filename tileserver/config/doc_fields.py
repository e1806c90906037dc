"""The building blocks of the YAML document's models (`document.py`, `layer_document.py`):
the value types as YAML users write them, the marks build.py and dump.py read, `Section`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
)


def _number_as_text(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[
    str, BeforeValidator(_number_as_text), WithJsonSchema({"type": ["string", "number"]})
]
Flag = StrictBool
Int = StrictInt
Number = Annotated[float, Field(strict=True)]
Scalar = str | int | float | bool
NO_EFFECT = "TileCloud-chain's; accepted with a warning, it has no effect in tileserver"


def enum(*values: str) -> dict[str, Any]:
    """`json_schema_extra` publishing the values build.py accepts (checked there, with its
    own message)."""
    return {"enum": list(values)}


NO_EFFECT_MARK = "x-no-effect"
WMS_MARK = "x-wms-only"
WMS_ONLY: dict[str, Any] = {WMS_MARK: True}  # a key of `type: wms` layers only
UTFGRID_MARK = "x-utfgrid"


def no_effect(description: str = NO_EFFECT, mark: str = NO_EFFECT_MARK) -> Any:
    """A key accepted so that a TileCloud-chain file loads unchanged; build.py warns once
    that it has no effect here."""
    return Field(None, description=description, json_schema_extra={mark: True})


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
