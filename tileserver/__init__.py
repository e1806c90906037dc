"""tileserver: an on-the-fly WMTS tile server (Mapnik metatiles cut into Memcached)."""

from __future__ import annotations

__version__ = "0.1.0"
