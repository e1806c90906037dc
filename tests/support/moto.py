"""moto's standalone server for the tests: SQS and SNS over the AWS wire protocol (HTTP) on
a free loopback port. `moto_server` comes with the test extra (`moto[server]`) in the venv."""

from __future__ import annotations

import json
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import pytest

from tests.support.daemons import find_binary, free_port, stop_process, wait_port
from tests.support.waiting import wait_until

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account


class MotoServer:
    """A private moto server at `endpoint_url`; its state lives in its process only."""

    def __init__(self) -> None:
        self.binary = find_binary("moto_server", "moto[server]", pip=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @staticmethod
    def env() -> dict[str, str]:
        """Credentials for botocore's chain (moto takes any)."""
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION,
        }

    def start(self, timeout: float = 30.0) -> None:
        with open(self._log, "wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        if not wait_port(self.port, timeout, self.proc):
            tail = self._log.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"moto_server did not start on port {self.port}:\n{tail}")

    def client(self, service: str) -> Any:
        """A boto3 client of the server (create queues, read messages); close it after use."""
        return boto3.client(
            service,
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def reset(self) -> None:
        """Forgets every queue, topic and message (moto's reset API)."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 200

    def topic_to_queue(self, topic: str, queue: str) -> tuple[str, str]:
        """An SNS topic with an SQS queue subscribed to it (raw delivery off: SNS's JSON
        envelope); (topic ARN, queue URL)."""
        sns, sqs = self.client("sns"), self.client("sqs")
        try:
            arn = sns.create_topic(Name=topic)["TopicArn"]
            url = sqs.create_queue(QueueName=queue)["QueueUrl"]
            queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"
            sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)
        finally:
            sns.close()
            sqs.close()
        return arn, url

    def notifications(self, queue_url: str, wait: float = 60.0) -> list[dict[str, Any]]:
        """The SNS notifications (Subject, Message...) that reached an SQS queue: once the
        first arrived, until no more are there; `wait` bounds the wait for the first (a
        hang, not an expected delay: on a busy machine SNS's delivery can take seconds),
        and fails the test naming the queue."""
        sqs = self.client("sqs")
        found: list[dict[str, Any]] = []

        def took() -> bool:
            answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
            messages = answer.get("Messages") or []
            found.extend(json.loads(m["Body"]) for m in messages)
            return bool(messages)

        try:
            wait_until(took, f"a notification in {queue_url}", wait, 0.1)
            while took():  # and those behind it
                pass
            return found
        finally:
            sqs.close()

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        self._log.unlink(missing_ok=True)


def use_moto_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """moto's credentials for botocore's default chain, with no developer profile, config
    file or endpoint of this machine's in the way."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/aws-config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/aws-credentials")
    for name, value in MotoServer.env().items():
        monkeypatch.setenv(name, value)
