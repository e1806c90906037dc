"""Jobs of distributed generation (`generate_tiles --role master/worker`): one metatile of
one layer, as the text of a queue message. Pure functions, no I/O.

A job carries everything a worker with the same configuration needs: the layer (and its
grid and dimension values, where not the first grid and the defaults), the tile store, the
metatile (level, row and column of its top-left tile), the layer's metatile
size when it was made (a worker with another configuration refuses the job instead of
writing other tiles), and which of the metatile's tiles are wanted, as a bit mask: bit
`r * meta_size + c` is the tile `r` rows below and `c` columns right of the top-left one.
No mask means every tile of the metatile. A 8x8 metatile's message is about 120 bytes.

The job's `id` is deterministic (layer, store, metatile and mask), so the master can enqueue
the same selection again without doubling the jobs still queued (see adapters/redis_queue).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tileserver.selection import MetatileRef
from tileserver.types import TileCoord

# The `v` of a message; a worker refuses a format it does not read. Format 2 adds a grid
# and dimension values: a worker of format 1 would render such a job on the wrong tile set.
FORMAT = 1
FORMATS = (1, 2)


class JobError(ValueError):
    """A message that is no job of this configuration; the message says why. Such a job
    can never succeed: it goes straight to the error list."""


@dataclass(frozen=True, slots=True)
class Job:
    """One metatile of one layer to render into the tile store `cache`."""

    layer: str
    cache: str
    ref: MetatileRef
    meta_size: int
    mask: int | None = None  # the wanted tiles; None: all of them
    grid: str = ""  # the layer's grid (TileCloud-chain's `grids`); "": its first one
    dimensions: tuple[tuple[str, str], ...] = ()  # (name, value); (): the defaults

    @property
    def tile_set(self) -> str:
        """'layer[:grid][;NAME=value...]': the layer, and its grid and dimension values
        where they are not the first grid and the defaults."""
        text = f"{self.layer}:{self.grid}" if self.grid else self.layer
        return text + "".join(f";{name}={value}" for name, value in self.dimensions)

    @property
    def id(self) -> str:
        """'tile set/cache/z/x/y[/mask]', x and y being the top-left tile's column and row."""
        base = f"{self.tile_set}/{self.cache}/{self.ref.z}/{self.ref.col}/{self.ref.row}"
        return base if self.mask is None else f"{base}/{self.mask:x}"

    def describe(self) -> str:
        return f"{self.tile_set} metatile {self.ref.z}/{self.ref.col}/{self.ref.row}"

    def wants(self, coord: TileCoord) -> bool:
        """True for the tiles of the metatile the job writes."""
        r, c = coord.row - self.ref.row, coord.col - self.ref.col
        if coord.z != self.ref.z or not (0 <= r < self.meta_size and 0 <= c < self.meta_size):
            return False
        return self.mask is None or bool(self.mask >> (r * self.meta_size + c) & 1)


def make_job(
    layer: str,
    cache: str,
    ref: MetatileRef,
    meta_size: int,
    wanted: Iterable[TileCoord],
    all_tiles: int,
    grid: str = "",
    dimensions: tuple[tuple[str, str], ...] = (),
) -> Job:
    """The job of ref whose wanted tiles are `wanted`, out of the `all_tiles` tiles of the
    metatile (fewer than meta_size² at the grid's edge): no mask when all are wanted."""
    mask = 0
    count = 0
    for coord in wanted:
        r, c = coord.row - ref.row, coord.col - ref.col
        if coord.z != ref.z or not (0 <= r < meta_size and 0 <= c < meta_size):
            raise ValueError(f"tile {coord} is not in metatile {ref} of size {meta_size}")
        bit = 1 << (r * meta_size + c)
        if not mask & bit:
            mask |= bit
            count += 1
    if count == 0:
        raise ValueError(f"no tile of metatile {ref} is wanted: there is no job to do")
    return Job(layer, cache, ref, meta_size, None if count == all_tiles else mask, grid,
               dimensions)  # fmt: skip


def encode_job(job: Job) -> str:
    """The message text of a job: compact JSON."""
    data: dict[str, Any] = {
        "v": 2 if job.grid or job.dimensions else FORMAT,
        "layer": job.layer,
        "cache": job.cache,
        "z": job.ref.z,
        "row": job.ref.row,
        "col": job.ref.col,
        "meta": job.meta_size,
    }
    if job.mask is not None:
        data["mask"] = f"{job.mask:x}"
    if job.grid:
        data["grid"] = job.grid
    if job.dimensions:
        data["dimensions"] = dict(job.dimensions)
    return json.dumps(data, separators=(",", ":"))


def decode_job(text: str | bytes) -> Job:
    """The job of a message; JobError saying what is wrong with it."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JobError(f"not a job message (not JSON: {exc})") from None
    if not isinstance(data, dict):
        raise JobError("not a job message (not a JSON object)")
    if data.get("v") not in FORMATS:
        raise JobError(
            f"job format {data.get('v')!r}, this worker reads formats "
            f"{', '.join(map(str, FORMATS))}"
        )
    layer, cache = data.get("layer"), data.get("cache")
    if not isinstance(layer, str) or not isinstance(cache, str) or not layer or not cache:
        raise JobError("a job needs a `layer` and a `cache` (strings)")
    numbers = [data.get(key) for key in ("z", "row", "col", "meta")]
    if not all(type(n) is int and n >= 0 for n in numbers):
        raise JobError("a job needs `z`, `row`, `col` and `meta` (integers >= 0)")
    z, row, col, meta_size = numbers
    assert z is not None and row is not None and col is not None and meta_size is not None
    if meta_size < 1 or row % meta_size or col % meta_size:
        raise JobError(f"{row}/{col} is not the top-left tile of a metatile of size {meta_size}")
    mask = data.get("mask")
    if mask is not None:
        try:
            mask = int(mask, 16) if isinstance(mask, str) else None
        except ValueError:
            mask = None
        if mask is None or mask <= 0 or mask >> (meta_size * meta_size):
            raise JobError(f"invalid tile mask {data.get('mask')!r}")
    grid, dimensions = data.get("grid", ""), data.get("dimensions", {})
    if not isinstance(grid, str):
        raise JobError(f"invalid grid {grid!r}")
    if not isinstance(dimensions, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in dimensions.items()
    ):
        raise JobError(f"invalid dimensions {dimensions!r}: expected names and values")
    return Job(layer, cache, MetatileRef(z, row, col), meta_size, mask, grid,
               tuple(dimensions.items()))  # fmt: skip


def job_id_of(body: str) -> str:
    """The id of the job of a message; for a message that is no job, its first characters."""
    try:
        return decode_job(body).id
    except JobError:
        return f"(not a job: {body[:60]!r})"


# --- what queues hand out and report --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    """A job as a worker received it. `receipt` is the queue's handle to acknowledge it (an
    SQS receipt handle, a Redis stream entry id); `tries` counts its deliveries, this one
    included (SQS's ApproximateReceiveCount, Redis' delivery count)."""

    receipt: str
    job_id: str
    body: str
    tries: int


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """Jobs waiting for a worker, received by one and not finished yet, and in the error list."""

    queued: int
    in_flight: int
    failed: int


@dataclass(frozen=True, slots=True)
class FailedJob:
    """An entry of the error list: the job, why it failed the last time, after how many
    tries, and when (seconds since the epoch)."""

    job_id: str
    body: str
    reason: str
    tries: int
    failed_at: float


def encode_failure(failed: FailedJob) -> str:
    return json.dumps(
        {
            "id": failed.job_id,
            "job": failed.body,
            "reason": failed.reason,
            "tries": failed.tries,
            "failed_at": failed.failed_at,
        },
        separators=(",", ":"),
    )


def decode_failure(text: str | bytes) -> FailedJob:
    """An error list entry; one that does not read is shown as it is rather than lost."""
    try:
        data = json.loads(text)
        return FailedJob(
            str(data["id"]),
            str(data["job"]),
            str(data["reason"]),
            int(data["tries"]),
            float(data["failed_at"]),
        )
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        raw = text.decode(errors="replace") if isinstance(text, bytes) else text
        return FailedJob("?", raw, "(unreadable error entry)", 0, 0.0)
