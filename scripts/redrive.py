"""Replay what a failure queue holds into the function that failed it, on the deployed stack.

    make redrive QUEUE=ProcessUploadFailures|ScheduleFailures STACK=<stack name> [DRY_RUN=1]
    redrive.py QUEUE --stack NAME [--dry-run]

Each message is what Lambda's on-failure destination wrote (`requestPayload`: the S3 event or
the scheduled command, with the error in `responsePayload`), or what EventBridge could not
deliver (the scheduled input itself). It is shown, handed back to the function asynchronously
(the same path it took the first time, retries included), and deleted once Lambda has accepted
it; with --dry-run it is only shown, and stays. Every function is idempotent, so a replay that
repeats work already done changes nothing.

SyncPostgresFailures is not replayed here: its messages name a range of stream records, not the
records (the stream may have dropped them since). `make redrive QUEUE=SyncPostgresFailures`
runs the repair that covers them instead, sync-postgres's {"mode": "reconcile", "fix": true},
and empties the queue once it succeeds.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import boto3

# Each queue's output in template.yaml, and the function its messages came from when they do not
# say (both kinds of message name it; this is a fallback).
QUEUES = {
    "ProcessUploadFailures": ("ProcessUploadFailuresQueueUrl", "ProcessUploadFunctionName"),
    "ScheduleFailures": ("ScheduleFailuresQueueUrl", None),
    "SyncPostgresFailures": ("SyncPostgresFailuresQueueUrl", "SyncPostgresFunctionName"),
}


def payload_of(message: dict[str, Any]) -> tuple[Any, str | None, str]:
    """(the event to hand back, the function it went to if the message says, what failed)."""
    body = json.loads(message["Body"])
    if isinstance(body, dict) and "requestPayload" in body:
        context = body.get("requestContext", {})
        error = json.dumps(body.get("responsePayload"))[:300]
        why = f"{context.get('condition', 'failed')} after {context.get('approximateInvokeCount', '?')} tries: {error}"
        return body["requestPayload"], context.get("functionArn"), why
    # EventBridge's dead letters are the input itself; the target and the error are attributes.
    attrs = {k: v.get("StringValue") for k, v in message.get("MessageAttributes", {}).items()}
    return body, attrs.get("TARGET_ARN"), f"EventBridge could not deliver it: {attrs.get('ERROR_MESSAGE')}"


def receive(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = sqs.receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1, VisibilityTimeout=60,
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    return messages


def redrive(sqs: Any, lam: Any, queue_url: str, function: str | None, dry_run: bool) -> int:
    """Replay every message; the number replayed. `function` is the target when a message does
    not name one."""
    replayed, seen = 0, set()
    while messages := receive(sqs, queue_url):
        fresh = [m for m in messages if m["MessageId"] not in seen]
        for m in messages:
            if m["MessageId"] in seen:
                release(sqs, queue_url, m)
        if not fresh:
            break
        for m in fresh:
            seen.add(m["MessageId"])
            event, arn, why = payload_of(m)
            to = arn or function
            if to is None:
                print(f"{m['MessageId']}: cannot tell which function it was for, left in the queue: {m['Body'][:200]}")
            else:
                print(f"{m['MessageId']}: {why}\n  -> {to}: {json.dumps(event)[:300]}")
            if to is None or dry_run:
                release(sqs, queue_url, m)
                continue
            answer = lam.invoke(FunctionName=to, InvocationType="Event", Payload=json.dumps(event).encode())
            if answer.get("StatusCode") == 202:
                sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
                replayed += 1
            else:
                print(f"  not accepted ({answer.get('StatusCode')}), left in the queue")
                release(sqs, queue_url, m)
    return replayed


def release(sqs: Any, queue_url: str, message: dict[str, Any]) -> None:
    """Make a message that stays visible again at once (for the next look, not in a minute)."""
    sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0)


def repair_mirror(sqs: Any, lam: Any, queue_url: str, function: str) -> bool:
    count = int(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"])
                ["Attributes"]["ApproximateNumberOfMessages"])
    print(f"{count} failed stream batches; running {function} with a fixing reconcile (it may take minutes)")
    answer = lam.invoke(FunctionName=function, Payload=b'{"mode": "reconcile", "fix": true}')
    report = answer["Payload"].read().decode()
    print(report)
    if answer.get("FunctionError"):
        print("the reconcile failed: the queue is left as it is")
        return False
    sqs.purge_queue(QueueUrl=queue_url)
    print("repaired; the queue is emptied")
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("queue", choices=sorted(QUEUES))
    ap.add_argument("--stack", required=True)
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    cfn, sqs, lam = boto3.client("cloudformation"), boto3.client("sqs"), boto3.client("lambda")
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cfn.describe_stacks(StackName=args.stack)["Stacks"][0]["Outputs"]}
    url_key, fn_key = QUEUES[args.queue]
    function = outputs[fn_key] if fn_key else None
    if args.queue == "SyncPostgresFailures":
        assert function
        return 0 if args.dry_run or repair_mirror(sqs, lam, outputs[url_key], function) else 1
    print(f"replayed {redrive(sqs, lam, outputs[url_key], function, args.dry_run)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
