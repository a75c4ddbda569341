"""`make redrive` (scripts/redrive.py) against the stack's SQS, with Lambda stood in for (the
local stack runs no Lambda): what Lambda's on-failure destinations and EventBridge's dead letters
write is handed back to the function it names, and deleted only once accepted."""
from __future__ import annotations

import importlib.util
import io
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

REPO = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("redrive", REPO / "scripts" / "redrive.py")
assert spec and spec.loader
redrive = importlib.util.module_from_spec(spec)
spec.loader.exec_module(redrive)

FN = "arn:aws:lambda:us-east-1:000000000000:function:stack-ProcessUploadFunction-X"
S3_EVENT = {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"},
                                                                   "object": {"key": "uploads/" + "a" * 64}}}]}


def sqs_endpoint() -> str:
    url = os.environ.get("AWS_ENDPOINT_URL_SQS")
    path = REPO / ".local" / "stack.env"
    if not url and path.is_file():
        url = next((line.split("=", 1)[1] for line in path.read_text().splitlines()
                    if line.startswith("AWS_ENDPOINT_URL_SQS=")), None)
    if not url:
        if os.environ.get("ANKICOLLAB_REQUIRE_STACK"):
            pytest.fail("no SQS endpoint: run scripts/up")
        pytest.skip("no local stack (scripts/up writes .local/stack.env)")
    return url


class FakeLambda:
    def __init__(self, status: int = 202, error: str | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.status, self.error = status, error

    def invoke(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append({**kwargs, "Payload": json.loads(kwargs["Payload"])})
        answer: dict[str, Any] = {"StatusCode": self.status, "Payload": io.BytesIO(b'{"differences": 3}')}
        if self.error:
            answer["FunctionError"] = self.error
        return answer


@pytest.fixture
def queue() -> Iterator[tuple[Any, str]]:
    sqs = boto3.client("sqs", endpoint_url=sqs_endpoint(), region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    url = sqs.create_queue(QueueName=f"redrive-test-{uuid.uuid4().hex[:10]}")["QueueUrl"]
    try:
        yield sqs, url
    finally:
        sqs.delete_queue(QueueUrl=url)


def destination_record(payload: Any, function_arn: str) -> str:
    """What a Lambda on-failure destination writes (its documented shape)."""
    return json.dumps({
        "version": "1.0", "timestamp": "2026-12-07T03:00:00.000Z",
        "requestContext": {"requestId": "r", "functionArn": f"{function_arn}:$LATEST",
                           "condition": "RetriesExhausted", "approximateInvokeCount": 3},
        "requestPayload": payload,
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST", "functionError": "Unhandled"},
        "responsePayload": {"errorType": "StoreError", "errorMessage": "storage is busy"},
    })


def remaining(sqs: Any, url: str) -> list[str]:
    """The bodies in the queue, left visible."""
    messages: list[dict[str, Any]] = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                       VisibilityTimeout=30).get("Messages", []):
        messages += batch
    for m in messages:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0)
    return [m["Body"] for m in messages]


def test_failed_events_go_back_to_the_function_they_name(queue: tuple[Any, str]) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=destination_record(S3_EVENT, FN))
    sweep = "arn:aws:lambda:us-east-1:000000000000:function:stack-SweepOrphansFunction-Y"
    sqs.send_message(QueueUrl=url, MessageBody='{"mode": "sweep"}', MessageAttributes={
        "TARGET_ARN": {"DataType": "String", "StringValue": sweep},
        "ERROR_MESSAGE": {"DataType": "String", "StringValue": "throttled"}})
    sqs.send_message(QueueUrl=url, MessageBody='{"mode": "reconcile", "fix": false}')

    dry = FakeLambda()
    assert redrive.redrive(sqs, dry, url, None, dry_run=True) == 0
    assert dry.calls == []
    assert len(remaining(sqs, url)) == 3, "a dry run leaves every message"

    lam = FakeLambda()
    assert redrive.redrive(sqs, lam, url, None, dry_run=False) == 2
    targets = {c["FunctionName"]: c["Payload"] for c in lam.calls}
    assert targets == {f"{FN}:$LATEST": S3_EVENT, sweep: {"mode": "sweep"}}
    assert all(c["InvocationType"] == "Event" for c in lam.calls)
    # The one that names no function stays for a person to look at.
    assert [json.loads(b) for b in remaining(sqs, url)] == [{"mode": "reconcile", "fix": False}]


def test_a_refused_replay_stays_in_the_queue(queue: tuple[Any, str]) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=destination_record(S3_EVENT, FN))
    assert redrive.redrive(sqs, FakeLambda(status=429), url, None, dry_run=False) == 0
    assert len(remaining(sqs, url)) == 1


def test_stream_failures_are_repaired_by_a_reconcile_then_emptied(queue: tuple[Any, str]) -> None:
    sqs, url = queue
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps({"DDBStreamBatchInfo": {"shardId": "s", "batchSize": 3}}))
    failing = FakeLambda(error="Unhandled")
    assert redrive.repair_mirror(sqs, failing, url, "sync") is False
    assert failing.calls[0]["Payload"] == {"mode": "reconcile", "fix": True}
    assert len(remaining(sqs, url)) == 1, "a failed repair leaves the queue"
    assert redrive.repair_mirror(sqs, FakeLambda(), url, "sync") is True
    assert remaining(sqs, url) == []
