from __future__ import annotations

from tileserver.cli.main import main

raise SystemExit(main())
