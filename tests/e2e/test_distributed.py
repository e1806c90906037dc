"""Generation across many machines, `generate_tiles --role master/worker`, over a real Redis
server and over moto's SQS and SNS server, with the real Mapnik renderer on the demo data:
three workers write exactly the tiles of a local run, a worker killed with SIGKILL leaves
nothing undone, a job that always fails ends in the error list with its reason,
`generate_controller --status` counts what happened, and the end is announced (SNS topic,
Redis channel)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.e2e.test_generate_tiles import assert_tiles, stored, summary, write_config
from tests.support.images import differing, same_tile
from tests.support.moto import REGION, MotoServer
from tests.support.redis import RedisServer
from tests.support.waiting import wait_until
from tileserver.adapters.filesystem_store import is_temporary

pytestmark = pytest.mark.e2e

ZOOM = "16"  # 36 metatiles of 2x2 tiles over the demo's Monaco: 110 tiles
META_SIZE = 2
LEASE = 2  # seconds: the visibility timeout (SQS) and claim timeout (Redis) of the tests
MAX_TRIES = 3
WORKER_SUMMARY = re.compile(
    r"^worker: (\d+) jobs done, (\d+) tiles written, (\d+) empty dropped, (\d+) retried, "
    r"(\d+) failed, [\d.]+ s, [\d.]+ tiles/s$",
    re.MULTILINE,
)
ENQUEUED = re.compile(r"^enqueued (\d+) jobs on .* \((\d+) of the (\d+) already queued", re.M)


@dataclass
class Setup:
    """One test's configuration on one backend, with what it needs to look inside."""

    backend: str
    workdir: Path
    config: Path
    env: dict[str, str]
    queue: dict[str, Any]  # the `redis` or `sqs` section
    redis: RedisServer | None = None
    moto: MotoServer | None = None
    topic: str = ""  # SQS: the ARN of the SNS topic of the end
    listener: str = ""  # SQS: the URL of a queue subscribed to the SNS topic
    processes: list[subprocess.Popen[str]] = field(default_factory=list)
    client: Any = None  # Redis: the client of the subscription to the end channel

    def write(self, **layers: dict[str, Any]) -> None:
        """The demo configuration with the queue, the `osm` layer in 2x2 metatiles, and
        more layers."""
        write_config(
            self.workdir,
            {"cache": "tiles", "meta_size": META_SIZE},
            **{self.backend: self.queue},
            **self.extra(),
        )
        data = yaml.safe_load(self.config.read_text())
        data["layers"].update(layers)
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def extra(self) -> dict[str, Any]:
        if self.moto is None:
            return {}
        return {"sns": {"topic": self.topic, "endpoint_url": self.moto.endpoint_url}}

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "tileserver", "generate", "-c", str(self.config), *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, *args: str, name: str) -> subprocess.Popen[str]:
        """A generate_tiles process in its own process group, its output in workdir/name."""
        out = open(self.workdir / f"{name}.out", "w")  # noqa: SIM115 (closed by the process)
        err = open(self.workdir / f"{name}.err", "w")  # noqa: SIM115
        process = subprocess.Popen(
            self.command(*args),
            cwd=self.workdir,
            env=self.env,
            stdout=out,
            stderr=err,
            text=True,
            start_new_session=True,
        )
        out.close()
        err.close()
        self.processes.append(process)
        return process

    def output(self, name: str) -> tuple[str, str]:
        return (
            (self.workdir / f"{name}.out").read_text(),
            (self.workdir / f"{name}.err").read_text(),
        )

    def status(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tileserver", "controller", "-c", str(self.config), "--status"],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def counts(self) -> tuple[int, int, int]:
        """(queued, in flight, failed), read straight from Redis or SQS."""
        if self.redis is not None:
            client = redis.Redis.from_url(self.redis.url, decode_responses=True)
            try:
                stream = self.queue["stream"]
                pipe = client.pipeline(transaction=True)
                pipe.xlen(stream)
                pipe.xpending(stream, "tileserver")
                pipe.hlen(f"{stream}:errors")
                length, pending, failed = pipe.execute()
            finally:
                client.close()
            return length - pending["pending"], pending["pending"], failed
        assert self.moto is not None
        sqs = self.moto.client("sqs")
        try:
            names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
            found = []
            for queue in (self.queue["queue"], f"{self.queue['queue']}-errors"):
                url = sqs.get_queue_url(QueueName=queue)["QueueUrl"]
                attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)
                found.append([int(attributes["Attributes"][n]) for n in names])
        finally:
            sqs.close()
        return found[0][0], found[0][1], sum(found[1])

    def end_messages(self, subscriber: Any) -> list[tuple[str, str]]:
        """(subject, message) of the end announcements: SNS's, or the Redis channel's."""
        if self.moto is not None:
            notes = self.moto.notifications(self.listener)
            return [(n["Subject"], n["Message"]) for n in notes]
        found: list[tuple[str, str]] = []

        def received() -> bool:
            # Until the first message, then until none follows within half a second.
            message = subscriber.get_message(ignore_subscribe_messages=True, timeout=0.5)
            if message is not None:
                data = yaml.safe_load(message["data"])
                found.append((data["subject"], data["message"]))
                return False
            return bool(found)

        wait_until(received, "the end message on the Redis channel", interval=0)
        return found

    def subscriber(self) -> Any:
        """Redis: a subscription to the end channel, made before the master publishes."""
        if self.redis is None:
            return None
        self.client = redis.Redis.from_url(self.redis.url, decode_responses=True)
        pubsub = self.client.pubsub()
        pubsub.subscribe(f"{self.queue['stream']}:end")
        assert wait_until(lambda: pubsub.get_message(timeout=0.5) is not None, "the subscription")
        return pubsub


@pytest.fixture(params=["redis", "sqs"])
def setup(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Setup]:
    """A fresh queue (stream or SQS queue, and SNS topic) on the session's daemon."""
    name = f"t{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        queue = {"url": server.url, "stream": name, "claim_timeout": LEASE, "max_tries": MAX_TRIES}
        result = Setup(
            "redis", tmp_path, tmp_path / "config.yaml", dict(os.environ), queue, redis=server
        )
    else:
        moto: MotoServer = request.getfixturevalue("moto_server")
        queue = {
            "queue": name,
            "region": REGION,
            "endpoint_url": moto.endpoint_url,
            "visibility_timeout": LEASE,
            "max_tries": MAX_TRIES,
            "counts_delay": 0,
        }
        result = Setup(
            "sqs",
            tmp_path,
            tmp_path / "config.yaml",
            {**os.environ, **moto.env()},
            queue,
            moto=moto,
        )
        result.topic, result.listener = moto.topic_to_queue(f"{name}-end", f"{name}-listener")
    result.write()
    yield result
    for process in result.processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    if result.client is not None:
        result.client.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The tiles of a local run (--role local) of the same selection."""
    workdir = tmp_path_factory.mktemp("local")
    config = write_config(workdir, {"cache": "tiles", "meta_size": META_SIZE})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tileserver",
            "generate",
            "-c",
            str(config),
            "--layer",
            "osm",
            "--zoom",
            ZOOM,
            "--processes",
            "2",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    files = stored(workdir / "tiles")
    assert len(files) == summary(result)["written"] == 110
    assert_tiles(files)
    return files


def worker_counts(stdout: str) -> dict[str, int]:
    match = WORKER_SUMMARY.search(stdout)
    assert match is not None, stdout
    keys = ("done", "written", "dropped", "retried", "failed")
    return dict(zip(keys, map(int, match.groups()), strict=True))


def status_counts(text: str) -> tuple[int, int, int]:
    values = [
        int(re.search(rf"^{key}: (\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
        for key in ("queued", "in flight", "failed")
    ]
    return values[0], values[1], values[2]


def test_three_workers_write_exactly_the_tiles_of_a_local_run(
    setup: Setup, reference: dict[str, bytes]
) -> None:
    # A lease far longer than the test: a worker paused below keeps its jobs meanwhile.
    setup.queue["claim_timeout" if setup.backend == "redis" else "visibility_timeout"] = 600
    setup.write()
    subscriber = setup.subscriber()
    master = setup.start(
        "--role", "master", "--wait", "--layer", "osm", "--zoom", ZOOM, name="master"
    )
    wait_until(lambda: ENQUEUED.search(setup.output("master")[0]) is not None, "the jobs")
    match = ENQUEUED.search(setup.output("master")[0])
    assert match is not None
    jobs = int(match.group(1))
    assert jobs == int(match.group(3)) == 36  # (110 tiles in 2x2 metatiles)
    status = setup.status()
    assert status.returncode == 0, status.stderr
    assert status_counts(status.stdout) == (36, 0, 0)
    if setup.backend == "redis":
        # The master again: the jobs still queued are not added twice.
        again = setup.run("--role", "master", "--layer", "osm", "--zoom", ZOOM)
        assert again.returncode == 0, again.stderr
        assert "enqueued 0 jobs" in again.stdout and "(36 of the 36 already queued" in again.stdout
        assert setup.counts() == (36, 0, 0)

    # The work shared for certain, whatever the machine's speed: the first worker is paused
    # once it writes tiles, and resumed once the two others have written some too (alone,
    # one worker may well do the 36 jobs before the others are started).
    tiles = setup.workdir / "tiles"

    def written() -> int:
        return sum(1 for _ in tiles.rglob("*.png")) if tiles.exists() else 0

    first = setup.start("--role", "worker", "--processes", "1", name="worker0")
    wait_until(lambda: written() > 0, "the first worker's tiles")
    os.kill(first.pid, signal.SIGSTOP)
    # Paused, the first worker holds at most its concurrency (2 jobs: --processes + 1), even
    # if a receive it had pending is answered meanwhile; once more than that has left the
    # queue since, another worker holds a job, which it will finish (a 600 s lease).
    queued_at_pause = setup.counts()[0]
    workers = [first] + [
        setup.start("--role", "worker", "--processes", "1", name=f"worker{i}") for i in (1, 2)
    ]
    wait_until(
        lambda: setup.counts()[0] < queued_at_pause - 2, "another worker's jobs", interval=0.2
    )
    os.kill(first.pid, signal.SIGCONT)
    for i, worker in enumerate(workers):
        assert worker.wait(timeout=240) == 0, setup.output(f"worker{i}")
    assert master.wait(timeout=60) == 0, setup.output("master")

    assert differing(stored(setup.workdir / "tiles"), reference) == []  # same paths, tiles
    done = [worker_counts(setup.output(f"worker{i}")[0]) for i in range(3)]
    assert sum(d["done"] for d in done) == 36  # each job once
    assert sum(d["written"] for d in done) == 110
    assert sum(1 for d in done if d["done"]) >= 2, done  # the work was shared
    assert all(d["failed"] == d["retried"] == 0 for d in done)
    out, err = setup.output("master")
    assert "finished: 36 jobs, 0 failed" in out
    assert "announced the end on " in err
    status = setup.status()
    assert status_counts(status.stdout) == (0, 0, 0)
    assert "failed jobs" not in status.stdout
    end = setup.end_messages(subscriber)
    assert len(end) == 1
    subject, message = end[0]
    assert subject == "tileserver: generation finished"
    assert "The generation of osm (zooms 16) is finished: 36 jobs, 0 of them failed" in message


def test_a_worker_killed_mid_run_leaves_every_tile_written(
    setup: Setup, reference: dict[str, bytes]
) -> None:
    enqueued = setup.run("--role", "master", "--layer", "osm", "--zoom", ZOOM)
    assert enqueued.returncode == 0, enqueued.stderr
    first = setup.start("--role", "worker", "--processes", "1", name="first")
    tiles = setup.workdir / "tiles"

    def holding_a_job() -> bool:
        assert first.poll() is None, setup.output("first")
        # Counted, not read: a tile's temporary file may be renamed between a listing
        # and its reading while the worker runs.
        written = sum(1 for _ in tiles.rglob("*.png")) if tiles.exists() else 0
        if written < 10:
            return False
        # Frozen, the worker can neither acknowledge its job nor take another: a job in
        # flight now is one it holds when it is killed (checked first and killed after,
        # it could have acknowledged its last job in between).
        os.killpg(first.pid, signal.SIGSTOP)
        if setup.counts()[1] >= 1:
            return True
        os.killpg(first.pid, signal.SIGCONT)
        return False

    wait_until(holding_a_job, "the first worker's tiles, and a job in its hands")
    os.killpg(first.pid, signal.SIGKILL)  # the worker and its render process, frozen
    first.wait(timeout=30)
    # Its jobs: nobody acknowledges them; in flight until the lease ends, queued after.
    queued, in_flight, failed = setup.counts()
    assert failed == 0
    left = queued + in_flight
    assert 0 < left < 36
    partial = stored(tiles)
    # A write the kill cut short leaves its temporary file (never listed nor read as a tile).
    leftovers = {path for path in partial if is_temporary(path.rsplit("/", 1)[-1])}
    tiles_written = {path: data for path, data in partial.items() if path not in leftovers}
    assert all(same_tile(data, reference[path]) for path, data in tiles_written.items())

    # Another worker: it does what is queued, then waits for the dead worker's jobs to
    # come back after the lease, and does them too.
    second = setup.run("--role", "worker", "--processes", "1", timeout=180)
    assert second.returncode == 0, second.stderr
    counts = worker_counts(second.stdout)
    # Every job left, and more only if one came back to it: delivery is at least once
    # (a 2 s lease renewed late on a busy machine hands the job over, here to itself).
    assert counts["done"] >= left
    assert counts["failed"] == 0
    final = stored(tiles)
    assert differing({p: d for p, d in final.items() if p not in leftovers}, reference) == []
    assert set(final) - set(reference) == leftovers  # nothing else beside the tiles
    assert setup.counts() == (0, 0, 0)


def test_a_poison_job_ends_in_the_error_list_with_its_reason(
    setup: Setup, closed_port: int
) -> None:
    closed = closed_port  # every GetMap fails
    dead = {
        "type": "wms",
        "grid": "epsg3857",
        "url": f"http://127.0.0.1:{closed}/wms",
        "layers": "roads",
        "retries": 0,
        "timeout": 2,
        "meta_size": META_SIZE,
        "cache": "tiles",
        "bbox": [826000, 5424000, 826100, 5424100],
    }
    setup.write(dead=dead)
    subscriber = setup.subscriber()
    master = setup.start(
        "--role",
        "master",
        "--wait",
        "--layer",
        "dead",
        "--layer",
        "osm",
        "--zoom",
        "15",
        name="master",
    )
    wait_until(lambda: ENQUEUED.search(setup.output("master")[0]) is not None, "the jobs")
    assert "enqueued 17 jobs" in setup.output("master")[0]  # 1 of `dead`, 16 of `osm`
    worker = setup.run("--role", "worker", "--processes", "1", timeout=180)
    assert worker.returncode == 0, worker.stderr
    counts = worker_counts(worker.stdout)
    assert (counts["done"], counts["retried"], counts["failed"]) == (16, MAX_TRIES - 1, 1)
    assert "failed (try 1 of 3), again in 1 s: UpstreamError" in worker.stderr
    assert master.wait(timeout=60) == 1
    out, err = setup.output("master")
    assert "finished: 17 jobs, 1 failed" in out
    assert "1 job(s) failed: generate_controller --status lists them" in err

    status = setup.status()
    assert status.returncode == 0, status.stderr
    assert status_counts(status.stdout) == (0, 0, 1)
    job = "dead/tiles/15/17058/11948/2"  # top-left tile z/x/y; the mask: 1 tile of 4
    line = next(line for line in status.stdout.splitlines() if line.startswith(f"  {job}"))
    assert re.match(
        rf"^  {job}: UpstreamError: WMS http://127\.0\.0\.1:{closed}/wms.*: cannot connect .*"
        rf"\(3 tries, \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$",
        line,
    ), line
    end = setup.end_messages(subscriber)
    assert len(end) == 1
    assert "17 jobs, 1 of them failed. 1 jobs are in the error list" in end[0][1]

    # Enqueued again (the WMS still dead), the job leaves the error list while it is
    # queued (Redis, which knows its jobs); SQS keeps the old entry beside the new job.
    again = setup.run("--role", "master", "--layer", "dead", "--zoom", "15")
    assert again.returncode == 0, again.stderr
    assert setup.counts() == ((1, 0, 0) if setup.backend == "redis" else (1, 0, 1))


def test_errors_name_what_is_missing(
    tmp_path: Path, redis_server: RedisServer, moto_server: MotoServer, closed_port: int
) -> None:
    moto = moto_server

    def generate(config: Path, *args: str, env: dict[str, str] | None = None) -> Any:
        return subprocess.run(
            [sys.executable, "-m", "tileserver", "generate", "-c", str(config), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, **(env or {})},
        )

    plain = write_config(tmp_path / "plain")
    no_queue = generate(
        plain, "--role", "master", "--layer", "osm", "--zoom", "16", "--cache", "tiles"
    )
    assert no_queue.returncode == 1
    assert "--role master needs a `sqs` or `redis` section in" in no_queue.stderr

    down = write_config(tmp_path / "down", redis={"url": f"redis://127.0.0.1:{closed_port}"})
    unreachable = generate(down, "--role", "worker")
    assert unreachable.returncode == 1
    assert re.search(
        r"redis redis://127\.0\.0\.1:\d+ stream tileserver-jobs: connect: .*"
        r"(refused|connecting)",
        unreachable.stderr,
    ), unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    with_layer = generate(down, "--role", "slave", "--layer", "osm", "--zoom", "16")
    assert with_layer.returncode == 2
    assert "leave out --layer, --zoom" in with_layer.stderr
    daemon = generate(down, "--role", "master", "--daemon")
    assert daemon.returncode == 2
    assert "--daemon goes with --role worker" in daemon.stderr

    # A worker and --status need the SQS queue the master creates.
    sqs = write_config(
        tmp_path / "sqs",
        sqs={"queue": "never-made", "region": REGION, "endpoint_url": moto.endpoint_url},
    )
    missing = generate(sqs, "--role", "worker", env=moto.env())
    assert missing.returncode == 1
    assert (
        "SQS queue never-made (eu-west-1 at " in missing.stderr
        and "the queue does not exist: `generate_tiles --role master` creates it" in missing.stderr
    )

    both = write_config(tmp_path / "both", redis={"url": redis_server.url}, sqs={"queue": "q"})
    refused = generate(both, "--role", "master")
    assert refused.returncode == 1
    assert "generation.queue: both `sqs` and `redis` are set" in refused.stderr
