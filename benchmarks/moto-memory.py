#!/usr/bin/env python3
"""moto's memory and speed under the references workload's transactions, before and after the
fixes in scripts/moto_server.py, side by side in one run.

    $TOOLS_VENV/bin/python benchmarks/moto-memory.py [--rounds 4] [--per-round 1000] [--baseline REV]

Each server gets the same rounds of TransactWriteItems (a note item and a count update on one of
12 shared hashes, every fifth one cancelled by its condition, as a replayed request is) on tables
with streams that a reader follows, like the gateway's sync. Printed per round: the server's RSS
and the round's wall time; at the end the ratios. The baseline is scripts/moto_server.py as it was
at REV (default: the last commit before the fixes).
"""
from __future__ import annotations

import argparse
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time

import boto3
from botocore.exceptions import ClientError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss(pid: int) -> int:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def run(server: pathlib.Path, rounds: int, per_round: int) -> list[tuple[int, float]]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(server), "127.0.0.1", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kw = dict(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", aws_access_key_id="t", aws_secret_access_key="t")
    ddb, streams = boto3.client("dynamodb", **kw), boto3.client("dynamodbstreams", **kw)
    try:
        for _ in range(100):
            try:
                ddb.list_tables()
                break
            except Exception:
                time.sleep(0.1)
        spec = {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
        arns = []
        for table in ("refs", "media"):
            out = ddb.create_table(TableName=table, KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                                   AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                                   BillingMode="PAY_PER_REQUEST", StreamSpecification=spec)
            arns.append(out["TableDescription"]["LatestStreamArn"])
        iterators = []
        for arn in arns:
            shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
            iterators.append(streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")["ShardIterator"])
        results = []
        n = 0
        for _ in range(rounds):
            began = time.monotonic()
            for _ in range(per_round):
                note = {"pk": {"S": f"note-{n - 1 if n % 5 == 4 else n}"}, "media": {"S": "x" * 300}}
                cond = {"ConditionExpression": "attribute_not_exists(pk)"}
                try:
                    ddb.transact_write_items(TransactItems=[
                        {"Put": {"TableName": "refs", "Item": note, **cond}},
                        {"Update": {"TableName": "media", "Key": {"pk": {"S": f"hash-{n % 12}"}}, "UpdateExpression": "ADD refs :one",
                                    "ExpressionAttributeValues": {":one": {"N": "1"}}}},
                    ])
                except ClientError:
                    pass  # every fifth note already exists: a cancelled transaction, as a replay is
                n += 1
                if n % 20 == 0:
                    for i, it in enumerate(iterators):
                        iterators[i] = streams.get_records(ShardIterator=it).get("NextShardIterator", it)
            results.append((rss(proc.pid), time.monotonic() - began))
        return results
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--per-round", type=int, default=1000)
    p.add_argument("--baseline", default="aa96c33")
    args = p.parse_args()
    old_src = subprocess.run(["git", "-C", str(ROOT), "show", f"{args.baseline}:scripts/moto_server.py"], check=True,
                             capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        old = pathlib.Path(tmp) / "moto_server_baseline.py"
        old.write_text(old_src)
        rows = {"baseline": run(old, args.rounds, args.per_round),
                "fixed": run(ROOT / "scripts/moto_server.py", args.rounds, args.per_round)}
    print(f"{args.per_round} transactions per round (every fifth cancelled), baseline = {args.baseline}")
    print("round   baseline RSS   time     fixed RSS   time")
    for i, (b, f) in enumerate(zip(rows["baseline"], rows["fixed"]), 1):
        print(f"{i:5d}   {b[0] / 1e6:9.0f} MB  {b[1]:5.1f} s  {f[0] / 1e6:9.0f} MB  {f[1]:5.1f} s")
    (b_rss, b_t), (f_rss, f_t) = rows["baseline"][-1], rows["fixed"][-1]
    first_b, first_f = rows["baseline"][0][1], rows["fixed"][0][1]
    print(f"last round: RSS {b_rss / f_rss:.1f}x smaller, {b_t / f_t:.1f}x faster; "
          f"slowdown first→last round: baseline {b_t / first_b:.2f}x, fixed {f_t / first_f:.2f}x")


if __name__ == "__main__":
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    main()
