"""TileCloud-chain's configuration files in ../shared/tcc-configs (third-party files,
never copied into the project): tests that read them skip, saying why, where the folder is
absent (a user's clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# ../shared/tcc-configs beside the clone (TILESERVER_TCC_CONFIGS elsewhere, e.g. a worktree).
TCC_CONFIGS = Path(os.environ.get("TILESERVER_TCC_CONFIGS", ROOT.parent / "shared" / "tcc-configs"))

needs_tcc_configs = pytest.mark.skipif(
    not TCC_CONFIGS.is_dir(),
    reason=f"{TCC_CONFIGS} is absent: TileCloud-chain's files are not part of this project",
)
