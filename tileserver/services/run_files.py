"""The files of a `generate_tiles` run: the state file, where each finished metatile is
recorded (a later run given it resumes), and the error file, where each failed one is
appended as a `z/x/y` line (`selection.read_tile_list` reads it back: `--tiles` replays it).
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from tileserver.selection import MetatileRef, metatile_ref, parse_tile

log = logging.getLogger("tileserver.generate")


def tile_line(ref: MetatileRef) -> str:
    """A metatile as the `z/x/y` of its top-left tile (x = column, y = row), the form of
    tile lists, error files and log messages."""
    return f"{ref.z}/{ref.col}/{ref.row}"


_STATE_LINE = re.compile(r"^(\S+) (\d+/\d+/\d+)$")
_PARTIAL = " (partial line, ignored)\n"


def read_state(path: Path, name: str, meta_size: int) -> set[MetatileRef]:
    """The metatiles of the layer `name` (TileGenerator.name) a state file records as
    finished, for metatiles of meta_size.

    Lines are `{layer} z/x/y`. A run killed while appending may leave a partial last line
    (`l 5/20/1` of `l 5/20/10`): it does not count, and `close_partial_line` marks it so
    that lines appended after it stay whole.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return set()
    done: set[MetatileRef] = set()
    for line in text.split("\n")[:-1]:  # the last part is '' or a partial line
        match = _STATE_LINE.match(line)
        if match is None:
            if not line.endswith(_PARTIAL.rstrip("\n")):
                log.warning("%s: ignoring the line %r", path, line)
            continue
        if match.group(1) == name:
            done.add(metatile_ref(parse_tile(match.group(2)), meta_size))
    return done


def close_partial_line(path: Path) -> None:
    """Ends a partial last line of a state file with a mark that makes it invalid."""
    try:
        with path.open("rb") as state:
            state.seek(0, os.SEEK_END)
            if state.tell() == 0:
                return
            state.seek(-1, os.SEEK_END)
            last = state.read(1)
    except FileNotFoundError:
        return
    if last != b"\n":
        append_line(path, _PARTIAL)


def append_line(path: Path, text: str) -> None:
    # One write per line, flushed at close: a kill leaves whole lines, or a last partial one.
    with path.open("a", encoding="utf-8") as out:
        out.write(text)
