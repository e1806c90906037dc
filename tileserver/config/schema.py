"""The published JSON Schema of the configuration, generated from `document.py`.

`python -m tileserver.config.schema` rewrites tileserver/config.schema.json; a test fails
when the committed file differs from what this generates.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from tileserver.config.document import Document

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "config.schema.json"


def json_schema() -> dict[str, Any]:
    """Draft 2020-12 JSON Schema of a configuration file (after Mako, before validation)."""
    schema = Document.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "tileserver's configuration (TileCloud-chain's vocabulary). Generated "
        "from tileserver/config/document.py: do not edit.",
        **schema,
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else SCHEMA_FILE
    target.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
