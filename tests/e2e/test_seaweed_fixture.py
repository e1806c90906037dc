"""The S3 server of the tests (tests/support/s3.py: SeaweedFS `weed mini`) checked itself,
so that the S3 tests can trust it: `start` and `restart` return once it takes writes, not
only once its port and bucket answer.

A write needs SeaweedFS's volume server registered with its master. After a restart the
bucket answers (from the filer) seconds before that: the volume server's first heartbeat
may reach the master before it leads again (the next one comes 5 s later), and the master
may be "warming up" its topology (about 15 s). A test that took S3 for back then met
puts that timed out (the rerun of test_generate_store_faults's dead-S3 test, once).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

from tests.support.s3 import COMPONENTS, SeaweedS3

pytestmark = pytest.mark.e2e

# Restarts in a row: each one returned before SeaweedFS took writes in about 2 of 5
# (measured without the wait for a write), so 4 catch it 9 times in 10.
RESTARTS = 4


def assign_error(s3: SeaweedS3) -> str:
    """What SeaweedFS's master answers when asked where a write to the bucket goes: ''
    when it names a volume, else its error ("no writable volumes", "warming up")."""
    master = s3.ports[COMPONENTS.index("master")]
    url = f"http://127.0.0.1:{master}/dir/assign?collection={s3.bucket}"
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as exc:
        return f"{exc.code} {exc.read().decode(errors='replace')}"
    return "" if answer.get("fid") else str(answer)


def test_seaweedfs_takes_writes_as_soon_as_start_and_restart_return() -> None:
    s3 = SeaweedS3()
    s3.start()
    try:
        assert assign_error(s3) == ""
        client = s3.client()
        try:
            client.put_object(Bucket=s3.bucket, Key="kept/tile.png", Body=b"kept")
        finally:
            client.close()
        for restart in range(1, RESTARTS + 1):
            s3.kill()
            s3.restart()
            assert assign_error(s3) == "", f"restart {restart} of {RESTARTS}"
            client = s3.client()
            try:
                # With the objects it held, and none of its own left behind.
                assert (
                    client.get_object(Bucket=s3.bucket, Key="kept/tile.png")["Body"].read()
                    == b"kept"
                )
                listed = client.list_objects_v2(Bucket=s3.bucket)
                assert [item["Key"] for item in listed.get("Contents", ())] == ["kept/tile.png"]
            finally:
                client.close()
    finally:
        s3.stop()
