"""`generate_tiles` into a store that fails as a whole while it runs: a folder on a file
system that fills up (a tmpfs too small) or turns read-only (remounted), and an S3 server
that dies. The run stops at once with a message naming the store and the reason (exit 1,
no traceback, nothing in the error file), leaves whole tiles only, keeps its state file,
and the same command resumes and completes once the store works again.

The file systems are real: a tmpfs mounted for the test (this needs root, as the tests
run in CI; without it the tests fail saying so) and unmounted at the end.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.e2e.test_generate_tiles import (
    OSM_BBOX,
    assert_tiles,
    command,
    expected_paths,
    run,
    state_files,
    stored,
    summary,
    wait_for_state_lines,
    write_config,
)
from tests.support.s3 import SeaweedS3
from tests.support.waiting import wait_until
from tileserver.adapters.filesystem_store import is_temporary

pytestmark = pytest.mark.e2e

# One tile per metatile over levels 13-17 of the demo layer: 584 small steps (about 6 MB
# of tiles, 2 s), so a fault lands in the middle of the run.
ZOOMS = "13-17"
EXPECTED = expected_paths(range(13, 18), OSM_BBOX)
LAYER = {"cache": "tiles", "meta_size": 1}


class Tmpfs:
    """A tmpfs of `size` mounted at `path`, remounted (full, read-only) by the test."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        mounted = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if mounted.returncode != 0:
            raise RuntimeError(
                f"cannot mount a tmpfs at {path} ({mounted.stderr.strip()}): these tests fill "
                "a real file system and make it read-only, which needs root (CAP_SYS_ADMIN)"
            )
        self.mounted = True

    def remount(self, options: str, timeout: float = 10) -> None:
        """`mount -o remount,OPTIONS`; retried while a file open for writing makes a
        read-only remount busy."""
        tried: list[subprocess.CompletedProcess[str]] = []

        def remounted() -> bool:
            tried[:] = [
                subprocess.run(
                    ["mount", "-o", f"remount,{options}", str(self.path)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            ]
            return tried[0].returncode == 0

        wait_until(
            remounted,
            f"remount,{options} of {self.path}",
            timeout,
            0.001,
            detail=lambda: tried[0].stderr.strip(),
        )

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "--lazy", str(self.path)], check=True)
            self.mounted = False


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Tmpfs]]:
    mounts: list[Tmpfs] = []

    def mount(path: Path, size: str) -> Tmpfs:
        mounts.append(Tmpfs(path, size))
        return mounts[-1]

    yield mount
    for m in mounts:
        m.unmount()


def start(config: Path, started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        command(config, "--layer", "osm", "--zoom", ZOOMS, "--processes", "1"),
        cwd=config.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={**os.environ, **SeaweedS3.env()},
    )
    started.append(process)
    return process


def assert_stopped(result: subprocess.CompletedProcess[str], where: str, reason: str) -> int:
    """The run stopped early on a store outage, said so, and recorded what it finished;
    the number of metatiles it finished."""
    if result.returncode != 1 or "Traceback" in result.stderr:
        pytest.fail(f"exit {result.returncode}, or a traceback:\n{result.stdout}{result.stderr}")
    assert f"stopped, the tile store fails: {where}" in result.stderr, result.stderr
    assert reason in result.stderr, result.stderr
    assert "run the same command again: it resumes from" in result.stderr
    # Not a failure of some metatiles, retried then listed: the store as a whole.
    assert "failed after" not in result.stderr
    counts = summary(result)
    assert counts["failed"] == 0
    assert 0 < counts["metatiles"] < len(EXPECTED)
    return counts["metatiles"]


def assert_resumed(result: subprocess.CompletedProcess[str], finished: int) -> None:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "(resuming)" in result.stderr
    counts = summary(result)
    assert counts["resumed"] == finished
    assert counts["metatiles"] + counts["resumed"] == len(EXPECTED)


def whole_tiles(folder: Path) -> dict[str, bytes]:
    """The tiles of a folder store, each checked whole (a 256 px PNG); temporary files,
    which a write cut short may leave, set apart and returned under their own key."""
    files = stored(folder)
    tiles = {p: d for p, d in files.items() if not is_temporary(p.rsplit("/", 1)[-1])}
    assert set(tiles) <= EXPECTED
    assert_tiles(tiles)
    return tiles


def test_a_full_store_stops_the_run_and_the_rerun_resumes_once_space_is_freed(
    tmp_path: Path, tmpfs: Callable[[Path, str], Tmpfs]
) -> None:
    config = write_config(tmp_path, LAYER)
    folder = tmp_path / "tiles"
    disk = tmpfs(folder, "2m")  # a third of what the run writes

    full = run(config, "--layer", "osm", "--zoom", ZOOMS, "--processes", "1")
    finished = assert_stopped(full, f"{folder}: write '1.0.0/osm/", "No space left on device")
    assert not (tmp_path / "generate_tiles-errors.txt").exists()
    [state] = state_files(tmp_path)
    assert state.read_text().count("\n") == finished
    tiles = whole_tiles(folder)
    assert len(tiles) == summary(full)["written"] == finished
    assert len(stored(folder)) == len(tiles), "a temporary file was left on the full disk"

    disk.remount("size=64m")
    again = run(config, "--layer", "osm", "--zoom", ZOOMS, "--processes", "1")
    assert_resumed(again, finished)
    assert set(whole_tiles(folder)) == EXPECTED
    assert len(stored(folder)) == len(EXPECTED)  # no temporary file either
    # The tiles of the first run were kept, not written again.
    assert all(whole_tiles(folder)[p] == data for p, data in tiles.items())
    assert state_files(tmp_path) == []


def test_a_store_turned_read_only_stops_the_run_and_the_rerun_resumes_once_writable(
    tmp_path: Path, tmpfs: Callable[[Path, str], Tmpfs], started: list[subprocess.Popen[str]]
) -> None:
    config = write_config(tmp_path, LAYER)
    folder = tmp_path / "tiles"
    disk = tmpfs(folder, "64m")
    process = start(config, started)
    wait_for_state_lines(tmp_path, 40, process)
    disk.remount("ro")
    stdout, stderr = process.communicate(timeout=120)
    result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    finished = assert_stopped(result, f"{folder}: ", "Read-only file system")
    assert finished >= 40
    tiles = whole_tiles(folder)
    assert len(tiles) == summary(result)["written"]

    # Still read-only: the rerun stops the same way, without a traceback.
    still = run(config, "--layer", "osm", "--zoom", ZOOMS, "--processes", "1")
    assert still.returncode == 1, still.stderr
    assert "Traceback" not in still.stderr and "Read-only file system" in still.stderr

    disk.remount("rw")
    again = run(config, "--layer", "osm", "--zoom", ZOOMS, "--processes", "1")
    assert_resumed(again, finished)
    assert set(whole_tiles(folder)) == EXPECTED
    assert len(stored(folder)) == len(EXPECTED)  # temporaries of the cut writes removed
    assert state_files(tmp_path) == []


def test_a_dead_s3_stops_the_run_and_the_rerun_resumes_once_it_is_back(
    tmp_path: Path, started: list[subprocess.Popen[str]]
) -> None:
    s3 = SeaweedS3()
    s3.start()
    try:
        config = write_config(tmp_path, LAYER)
        data = yaml.safe_load(config.read_text())
        data["caches"]["tiles"] = {"type": "s3", "bucket": s3.bucket, "folder": "gen",
                                   "endpoint_url": s3.endpoint_url}  # fmt: skip
        config.write_text(yaml.safe_dump(data, sort_keys=False))
        process = start(config, started)
        wait_for_state_lines(tmp_path, 20, process)
        s3.kill()
        killed = time.monotonic()
        stdout, stderr = process.communicate(timeout=120)
        assert time.monotonic() - killed < 30, "the run went on against a dead S3"
        result = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
        finished = assert_stopped(
            result, f"s3://{s3.bucket}/gen/: put '1.0.0/osm/", "Could not connect to the endpoint"
        )
        assert finished >= 20

        s3.restart()
        again = subprocess.run(
            command(config, "--layer", "osm", "--zoom", ZOOMS, "--processes", "1"),
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env={**os.environ, **SeaweedS3.env()},
        )  # fmt: skip
        assert_resumed(again, finished)
        # S3 is back (it takes writes): no put of the rerun failed, not even once.
        assert "(try 1/" not in again.stderr, again.stderr
        client = s3.client()
        try:
            keys: list[str] = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=s3.bucket, Prefix="gen/"
            ):
                keys += [item["Key"] for item in page.get("Contents", ())]
            assert {k.removeprefix("gen/") for k in keys} == EXPECTED
            for key in sorted(keys)[:: len(keys) // 10]:
                body = client.get_object(Bucket=s3.bucket, Key=key)["Body"].read()
                image = Image.open(io.BytesIO(body))
                assert (image.format, image.size) == ("PNG", (256, 256)), key
        finally:
            client.close()
    finally:
        s3.stop()
