from __future__ import annotations

from tileserver.cli import main

raise SystemExit(main())
