"""A local file replaced whole: written to a temporary file beside it, synced, then renamed
over it (`os.replace` is atomic on POSIX), so that a reader sees the old file or the new
one, never part of one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Writes data at path through a temporary file renamed over it: a reader (MapCache
    reloading) sees the old file or the new one, never part of one."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        # 0o666 & ~umask, as any file: readable by the web server that runs MapCache.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        with open(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
