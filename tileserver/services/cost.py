"""The cost model of `generate_controller --cost` (TileCloud-chain's): what generating
levels of a layer takes in renders, time and S3 requests, what keeping and serving the
tiles costs a month, and the requests a distributed generation makes to its queue."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from tileserver.config import Config, CostConfig, Layer
from tileserver.selection import format_zooms

KIB_PER_GIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class LevelCount:
    """What generating one level of a layer's bbox takes."""

    z: int
    metatiles: int  # renders: metatiles, or tiles for a layer with meta: false
    tiles: int


def level_count(layer: Layer, z: int) -> LevelCount:
    """The tiles of level z that intersect the layer's bbox (those `generate_tiles`
    writes), and the metatiles holding them."""
    limits = layer.grid.limits(z, layer.bbox)
    rows = limits.max_row - limits.min_row + 1
    cols = limits.max_col - limits.min_col + 1
    m = layer.effective_meta_size
    meta_rows = limits.max_row // m - limits.min_row // m + 1
    meta_cols = limits.max_col // m - limits.min_col // m + 1
    return LevelCount(z, meta_rows * meta_cols, rows * cols)


@dataclass(frozen=True, slots=True)
class Estimate:
    """Generation time and S3 costs of some tiles; `add` sums estimates."""

    metatiles: int = 0
    tiles: int = 0
    milliseconds: float = 0.0  # generation time on one process
    put: float = 0.0  # dollars, once
    size_kib: float = 0.0

    def add(self, other: Estimate) -> Estimate:
        return Estimate(
            self.metatiles + other.metatiles,
            self.tiles + other.tiles,
            self.milliseconds + other.milliseconds,
            self.put + other.put,
            self.size_kib + other.size_kib,
        )


def estimate(layer: Layer, count: LevelCount, cost: CostConfig) -> Estimate:
    """TileCloud-chain's model: a metatile render plus a cut per tile, or a render per tile."""
    if layer.meta:
        ms = (
            count.metatiles * cost.metatile_generation_time
            + count.tiles * cost.tile_generation_time
        )
    else:
        ms = count.tiles * cost.tileonly_generation_time
    return Estimate(
        metatiles=count.metatiles if layer.meta else 0,
        tiles=count.tiles,
        milliseconds=ms,
        put=count.tiles * cost.s3.put / 1000,
        size_kib=count.tiles * cost.tile_size,
    )


@dataclass(frozen=True, slots=True)
class MonthlyCost:
    """Dollars a month of keeping `size_kib` on S3 and serving `requests` tiles from it."""

    storage: float
    get: float
    download: float

    @property
    def total(self) -> float:
        return self.storage + self.get + self.download


def monthly_cost(size_kib: float, requests: float, cost: CostConfig) -> MonthlyCost:
    return MonthlyCost(
        storage=size_kib / KIB_PER_GIB * cost.s3.storage,
        get=requests * cost.s3.get / 1000,
        download=requests * cost.tile_size / KIB_PER_GIB * cost.s3.download,
    )


def format_duration(milliseconds: float) -> str:
    """'1 d 2:03:04' (TileCloud-chain's d h:mm:ss), to the second."""
    seconds = round(milliseconds / 1000)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    text = f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{days} d {text}" if days else text


def format_size(kib: float) -> str:
    for unit in ("KiB", "MiB", "GiB"):
        if kib < 1024:
            return f"{kib:.1f} {unit}"
        kib /= 1024
    return f"{kib:.1f} TiB"


def money(dollars: float) -> str:
    return f"${dollars:,.4f}"


# Jobs per request of the master: SQS's SendMessageBatch takes 10, RedisQueue's script 200.
QUEUE_BATCH = {"sqs": 10, "redis": 200}


@dataclass(frozen=True, slots=True)
class QueueRequests:
    """Requests a distributed generation of `jobs` metatile jobs makes to its queue: the
    master's sends, batched; one receive per job (a busy worker asks for as many jobs as it
    has free render processes, most often one); one delete per job, when it is done.
    Lease renewals of jobs longer than a third of the lease, and the empty polls of idle
    workers, come on top."""

    jobs: int
    sends: int
    receives: int
    deletes: int

    @property
    def total(self) -> int:
        return self.sends + self.receives + self.deletes


def queue_requests(jobs: int, batch: int) -> QueueRequests:
    return QueueRequests(jobs, -(-jobs // batch), jobs, jobs)


def cost_report(
    config: Config, layers: Sequence[Layer], zooms: Sequence[tuple[int, ...]]
) -> list[str]:
    """The lines of `generate_controller --cost`: each level of each layer, the layer's
    total and a month of it on S3, the queue's requests, then the total of every layer."""
    lines: list[str] = []
    total = Estimate()
    monthly_total = MonthlyCost(0.0, 0.0, 0.0)
    queue = config.queue  # --role master/worker's, when the config has one
    queue_jobs = 0
    for layer, layer_zooms in zip(layers, zooms, strict=True):
        cost = config.cost.for_layer(layer)  # the layer's own figures, if any
        renders = f"{layer.meta_size}x{layer.meta_size} metatiles" if layer.meta else "no metatiles"
        lines.append(
            f"layer {layer.name} (grid {layer.grid.name}, {renders}), "
            f"zooms {format_zooms(layer_zooms)}:"
        )
        layer_total = Estimate()
        for z in layer_zooms:
            level = estimate(layer, level_count(layer, z), cost)
            layer_total = layer_total.add(level)
            lines.append(
                f"  zoom {z}: {level.metatiles} metatiles, {level.tiles} tiles, "
                f"{format_duration(level.milliseconds)}, S3 PUT {money(level.put)}"
            )
        monthly = monthly_cost(layer_total.size_kib, cost.requests_per_month, cost)
        lines.append(
            f"  all: {layer_total.metatiles} metatiles, {layer_total.tiles} tiles, "
            f"{format_duration(layer_total.milliseconds)}, S3 PUT {money(layer_total.put)}; "
            f"a month: storage of {format_size(layer_total.size_kib)} "
            f"{money(monthly.storage)}, {cost.requests_per_month:,.0f} GET "
            f"{money(monthly.get)}, download {money(monthly.download)}"
        )
        if queue is not None:
            jobs = sum(level_count(layer, z).metatiles for z in layer_zooms)
            layer_requests = queue_requests(jobs, QUEUE_BATCH[queue])
            queue_jobs += jobs
            lines.append(f"  {queue_cost(queue, layer_requests, config.cost)}")
        total = total.add(layer_total)
        monthly_total = MonthlyCost(
            monthly_total.storage + monthly.storage,
            monthly_total.get + monthly.get,
            monthly_total.download + monthly.download,
        )
    processes = config.generation.number_process
    parallel = (
        f" ({format_duration(total.milliseconds / processes)} on {processes} processes)"
        if processes and processes > 1
        else ""
    )
    lines.append(
        f"total: {total.metatiles} metatiles, {total.tiles} tiles, generation "
        f"{format_duration(total.milliseconds)} on one process{parallel}, "
        f"S3 PUT {money(total.put)}; a month: storage {money(monthly_total.storage)}, "
        f"GET {money(monthly_total.get)}, download {money(monthly_total.download)}, "
        f"{money(monthly_total.total)} in all"
    )
    if queue is not None:
        requests = queue_requests(queue_jobs, QUEUE_BATCH[queue])
        lines.append(f"total {queue_cost(queue, requests, config.cost)}")
    return lines


def queue_cost(queue: str, requests: QueueRequests, cost: CostConfig) -> str:
    """'queue (sqs): N jobs, M requests (...), $x' (Redis has no price per request)."""
    text = (
        f"queue ({queue}): {requests.jobs} jobs, {requests.total} requests "
        f"({requests.sends} sends, {requests.receives} receives, {requests.deletes} deletes)"
    )
    if queue == "sqs":
        text += f", SQS {money(requests.total * cost.sqs.request / 1e6)}"
    return text
