"""Distributed generation's pure parts: job messages (tileserver/jobs.py), the `sqs`, `sns`,
`redis` and `generation.queue` settings, and the queue requests of --cost."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tileserver.adapters.redis_queue import RedisQueue
from tileserver.cli.controller import main
from tileserver.config import Config, RedisConfig, SnsConfig, SqsConfig, parse_config
from tileserver.errors import ConfigError
from tileserver.jobs import (
    FailedJob,
    Job,
    JobError,
    decode_failure,
    decode_job,
    encode_failure,
    encode_job,
    job_id_of,
    make_job,
)
from tileserver.selection import MetatileRef
from tileserver.services.cost import QUEUE_BATCH, queue_requests
from tileserver.types import TileCoord

REF = MetatileRef(15, 11944, 17060)


def tiles(ref: MetatileRef, size: int, offsets: set[tuple[int, int]]) -> list[TileCoord]:
    return [TileCoord(ref.z, ref.row + r, ref.col + c) for r, c in sorted(offsets)]


# --- job messages ------------------------------------------------------------------------------


def test_a_whole_metatile_has_no_mask_and_a_readable_id() -> None:
    job = make_job("osm", "tiles", REF, 2, tiles(REF, 2, {(0, 0), (0, 1), (1, 0), (1, 1)}), 4)
    assert job == Job("osm", "tiles", REF, 2, None)
    assert job.id == "osm/tiles/15/17060/11944"  # z/x/y of the top-left tile
    assert job.describe() == "osm metatile 15/17060/11944"
    text = encode_job(job)
    assert json.loads(text) == {
        "v": 1,
        "layer": "osm",
        "cache": "tiles",
        "z": 15,
        "row": 11944,
        "col": 17060,
        "meta": 2,
    }
    assert decode_job(text) == job
    assert job.wants(TileCoord(15, 11945, 17061))
    assert not job.wants(TileCoord(15, 11946, 17061))  # the next metatile
    assert not job.wants(TileCoord(16, 11944, 17060))


def test_a_partial_metatile_carries_the_mask_of_its_wanted_tiles() -> None:
    wanted = tiles(REF, 8, {(0, 7), (7, 0)})
    job = make_job("osm", "tiles", REF, 8, wanted, 64)
    assert job.mask == (1 << 7) | (1 << 56)
    assert job.id == f"osm/tiles/15/17060/11944/{job.mask:x}"
    assert [
        t for t in tiles(REF, 8, {(r, c) for r in range(8) for c in range(8)}) if job.wants(t)
    ] == wanted
    assert len(encode_job(job)) < 120
    # At the grid's edge a metatile has fewer tiles: all of them is no mask.
    assert make_job("osm", "tiles", REF, 8, wanted, 2).mask is None


@given(st.integers(1, 16), st.data())
def test_encoding_round_trips(size: int, data: st.DataObject) -> None:
    offsets = data.draw(
        st.sets(st.tuples(st.integers(0, size - 1), st.integers(0, size - 1)), min_size=1)
    )
    ref = MetatileRef(12, 40 * size, 8 * size)
    job = make_job("l", "c", ref, size, tiles(ref, size, offsets), size * size)
    assert decode_job(encode_job(job)) == job
    assert {
        (t.row - ref.row, t.col - ref.col) for t in tiles(ref, size, offsets) if job.wants(t)
    } == offsets


def test_make_job_refuses_tiles_of_another_metatile_and_no_tile() -> None:
    with pytest.raises(ValueError, match="is not in metatile"):
        make_job("l", "c", REF, 2, [TileCoord(15, 11946, 17060)], 4)
    with pytest.raises(ValueError, match="no tile of metatile"):
        make_job("l", "c", REF, 2, [], 4)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "not a job message (not JSON"),
        ("[1]", "not a job message (not a JSON object)"),
        ('{"v": 7}', "job format 7, this worker reads formats 1, 2"),
        ('{"v": 1, "layer": "l", "z": 1, "row": 0, "col": 0, "meta": 1}', "needs a `layer` and"),
        (
            '{"v": 1, "layer": "l", "cache": "c", "z": 1, "row": -2, "col": 0, "meta": 2}',
            "needs `z`, `row`, `col` and `meta`",
        ),
        (
            '{"v": 1, "layer": "l", "cache": "c", "z": 1, "row": 1, "col": 0, "meta": 2}',
            "1/0 is not the top-left tile of a metatile of size 2",
        ),
        (
            '{"v": 1, "layer": "l", "cache": "c", "z": 1, "row": 0, "col": 0, "meta": 2, '
            '"mask": "1f"}',
            "invalid tile mask '1f'",
        ),
        (
            '{"v": 1, "layer": "l", "cache": "c", "z": 1, "row": 0, "col": 0, "meta": 2, '
            '"mask": "zz"}',
            "invalid tile mask 'zz'",
        ),
    ],
)
def test_decode_names_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(JobError) as info:
        decode_job(text)
    assert reason in str(info.value)
    assert job_id_of(text).startswith("(not a job: ")


def test_failures_round_trip_and_an_unreadable_one_is_kept_as_text() -> None:
    failed = FailedJob("osm/tiles/15/1/2", '{"v":1}', "RenderError: boom", 3, 1_700_000_000.5)
    assert decode_failure(encode_failure(failed)) == failed
    assert decode_failure(b"garbage") == FailedJob(
        "?", "garbage", "(unreadable error entry)", 0, 0.0
    )


# --- settings --------------------------------------------------------------------------------


def config(tmp_path: Path, **top: Any) -> Config:
    style = tmp_path / "style.xml"
    style.write_text("<Map/>")
    data = {
        "grids": {"g": {"srs": "EPSG:3857", "bbox": [0, 0, 1000, 1000], "resolutions": [10, 1]}},
        "layers": {"l": {"type": "mapnik", "mapfile": str(style), "grid": "g"}},
        **top,
    }
    return parse_config(copy.deepcopy(data), tmp_path)


def errors(tmp_path: Path, **top: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config(tmp_path, **top)
    return info.value.messages


def test_queue_sections_and_their_defaults(tmp_path: Path) -> None:
    assert config(tmp_path).queue is None
    sqs = config(tmp_path, sqs={"queue": "tiles"})
    assert sqs.queue == "sqs"
    assert sqs.sqs == SqsConfig(queue="tiles", errors_queue="tiles-errors", region="eu-west-1")
    redis = config(tmp_path, redis={"url": "redis://db:6379/2"})
    assert redis.queue == "redis"
    assert redis.redis == RedisConfig(url="redis://db:6379/2")
    sns = config(tmp_path, sns={"topic": "arn:aws:sns:eu-central-1:1234:tiles-done"})
    assert sns.sns == SnsConfig(
        topic="arn:aws:sns:eu-central-1:1234:tiles-done", region="eu-central-1"
    )
    both = config(
        tmp_path,
        sqs={"queue": "q"},
        redis={"url": "unix:///run/redis.sock"},
        generation={"queue": "redis"},
    )
    assert both.queue == "redis"


@pytest.mark.parametrize(
    ("top", "message"),
    [
        (
            {"sqs": {"queue": "q"}, "redis": {"url": "redis://h"}},
            "generation.queue: both `sqs` and `redis` are set: say which one distributed "
            "generation uses (sqs or redis)",
        ),
        ({"generation": {"queue": "sqs"}}, "generation.queue: 'sqs' needs a `sqs` section"),
        (
            {"generation": {"queue": "kafka"}},
            "generation.queue: expected one of sqs, redis, got 'kafka'",
        ),
        (
            {"sqs": {"queue": "jobs.fifo"}},
            "sqs.queue: expected an SQS queue name of at most 80 letters, digits, '-' and '_', got "
            "'jobs.fifo' (FIFO queues are not supported)",
        ),
        ({"sqs": {"queue": "q" * 75}}, "sqs.errors_queue: expected an SQS queue name"),
        ({"sqs": {"queue": "q", "errors_queue": "q"}}, "sqs.errors_queue: must differ from"),
        (
            {"sqs": {"queue": "q", "visibility_timeout": 0}},
            "sqs.visibility_timeout: must be at least 1, got 0",
        ),
        ({"sqs": {"queue": "q", "counts_delay": -1}}, "sqs.counts_delay: must be at least 0"),
        (
            {"sqs": {"queue": "q", "endpoint_url": "localhost:4566"}},
            "sqs.endpoint_url: expected an http:// or https:// URL, got 'localhost:4566'",
        ),
        (
            {"sqs": {"queue": "q", "visibility": 3}},
            "sqs.visibility: unknown key; did you mean 'visibility_timeout'?",
        ),
        ({"sqs": {}}, "sqs.queue: missing required key"),
        ({"sns": {"topic": "tiles-done"}}, "sns.topic: expected an SNS topic ARN"),
        (
            {"sns": {"topic": "arn:aws:sns::1234:tiles"}},
            "sns.region: missing, and the topic ARN names no region",
        ),
        (
            {"redis": {"url": "localhost:6379"}},
            "redis.url: expected a redis://host:port, rediss:// or unix:// URL, got",
        ),
        (
            {"redis": {"url": "redis://h", "claim_timeout": 0}},
            "redis.claim_timeout: must be greater than 0",
        ),
        ({"redis": {"url": "redis://h", "max_tries": 0}}, "redis.max_tries: must be at least 1"),
        ({"redis": {"url": "redis://h", "group": " "}}, "redis.group: must not be empty"),
        ({"cost": {"sqs": {"request": -0.4}}}, "cost.sqs.request: must be at least 0, got -0.4"),
    ],
)
def test_wrong_queue_settings_are_named(tmp_path: Path, top: dict[str, Any], message: str) -> None:
    found = errors(tmp_path, **top)
    assert any(m.startswith(message) for m in found), found


# --- --cost --------------------------------------------------------------------------------


def test_queue_requests_batch_the_sends_only() -> None:
    sqs = queue_requests(1234, QUEUE_BATCH["sqs"])
    assert (sqs.sends, sqs.receives, sqs.deletes, sqs.total) == (124, 1234, 1234, 2592)
    redis = queue_requests(1234, QUEUE_BATCH["redis"])
    assert (redis.sends, redis.total) == (7, 2475)
    assert queue_requests(0, 10).total == 0


def test_cost_prints_the_queue_requests_of_each_layer_and_in_all(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    style = tmp_path / "style.xml"
    style.write_text("<Map/>")
    data = {
        "grids": {
            "g": {
                "srs": "EPSG:3857",
                "bbox": [0, 0, 25600, 25600],
                "resolutions": [100, 50, 25, 12.5, 6.25],
            }
        },
        "layers": {"l": {"type": "mapnik", "mapfile": str(style), "grid": "g", "meta_size": 2}},
        "sqs": {"queue": "tiles"},
        "cost": {"sqs": {"request": 4000}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(data))
    assert main(["-c", str(path), "--cost", "--layer", "l", "--zoom", "0-4"]) == 0
    out = capsys.readouterr().out
    # 1 + 1 + 4 + 16 + 64 jobs (2x2 metatiles): 9 sends, then a receive and a delete each.
    assert (
        "  queue (sqs): 86 jobs, 181 requests (9 sends, 86 receives, 86 deletes), SQS $0.7240"
        in out
    )
    assert out.rstrip().endswith(
        "total queue (sqs): 86 jobs, 181 requests (9 sends, 86 receives, 86 deletes), SQS $0.7240"
    )


def test_the_redis_url_is_shown_without_its_password() -> None:
    queue = RedisQueue(RedisConfig(url="redis://worker:s3cret@10.0.0.7:6380/2", stream="jobs"))
    assert queue.name == "redis://worker:***@10.0.0.7:6380/2 stream jobs"
    assert "s3cret" not in repr(queue)
