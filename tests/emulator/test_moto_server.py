"""scripts/moto_server.py keeps moto's DynamoDB semantics while bounding its memory.

Each test talks to a real `scripts/moto_server.py` process over HTTP with boto3, as the stack's
clients do. Run by scripts/test (the "emulator" stage) with the tools venv:
    $TOOLS_VENV/bin/python -m pytest tests/emulator
"""
from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import boto3
import pytest
from botocore.exceptions import ClientError

SERVER = pathlib.Path(__file__).resolve().parents[2] / "scripts" / "moto_server.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Moto:
    def __init__(self, **env: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, str(SERVER), "127.0.0.1", str(self.port)],
                                     env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{self.port}"
        kw = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")
        self.ddb = boto3.client("dynamodb", **kw)
        self.streams = boto3.client("dynamodbstreams", **kw)
        for _ in range(100):
            try:
                self.ddb.list_tables()
                return
            except Exception:
                time.sleep(0.1)
        raise RuntimeError("moto_server.py did not start")

    def rss(self) -> int:
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def table(self, name: str, range_key: bool = False) -> str:
        keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
        attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
        if range_key:
            keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
            attrs.append({"AttributeName": "sk", "AttributeType": "S"})
        out = self.ddb.create_table(TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST",
                                    StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
        return out["TableDescription"]["LatestStreamArn"]

    def iterator(self, arn: str, kind: str = "TRIM_HORIZON", seq: str | None = None) -> str:
        shard = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
        kw = {"SequenceNumber": seq} if seq else {}
        return self.streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType=kind, **kw)["ShardIterator"]

    def read(self, iterator: str) -> tuple[list[dict], str]:
        page = self.streams.get_records(ShardIterator=iterator)
        return page["Records"], page.get("NextShardIterator", iterator)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def moto() -> Iterator[Moto]:
    m = Moto()
    yield m
    m.stop()


def put(pk: str, n: int, sk: str | None = None) -> dict:
    item = {"pk": {"S": pk}, "n": {"N": str(n)}}
    if sk is not None:
        item["sk"] = {"S": sk}
    return item


def scan(m: Moto, table: str) -> list[dict]:
    return sorted(m.ddb.scan(TableName=table)["Items"], key=lambda i: (i["pk"]["S"], i.get("sk", {}).get("S", "")))


def test_a_cancelled_transaction_leaves_items_and_stream_as_they_were_with_its_reasons(moto: Moto) -> None:
    arn = moto.table("t")
    moto.table("u", range_key=True)
    moto.ddb.put_item(TableName="t", Item=put("a", 1))
    moto.ddb.put_item(TableName="u", Item=put("x", 1, "1"))
    before_t, before_u = scan(moto, "t"), scan(moto, "u")
    records, it = moto.read(moto.iterator(arn))
    assert [r["eventName"] for r in records] == ["INSERT"]

    with pytest.raises(ClientError) as e:
        moto.ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "t", "Item": put("b", 2)}},                       # a new item
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "a"}}, "UpdateExpression": "SET n = :v",
                        "ExpressionAttributeValues": {":v": {"N": "9"}}}},          # a changed one
            {"Put": {"TableName": "u", "Item": put("x", 5, "2")}},                  # a new range key
            {"Put": {"TableName": "u", "Item": put("y", 5, "1")}},                  # a new hash key
            {"ConditionCheck": {"TableName": "t", "Key": {"pk": {"S": "c"}}, "ConditionExpression": "attribute_exists(pk)"}},
        ])
    assert e.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = [r["Code"] for r in e.value.response["CancellationReasons"]]
    assert reasons == ["None", "None", "None", "None", "ConditionalCheckFailed"]
    assert scan(moto, "t") == before_t
    assert scan(moto, "u") == before_u
    # The stream holds nothing from the cancelled transaction, and the same reader goes on.
    records, it = moto.read(it)
    assert records == []
    moto.ddb.put_item(TableName="t", Item=put("c", 3))
    records, it = moto.read(it)
    assert [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records] == [("INSERT", "c")]


def test_a_transaction_retried_with_its_token_is_applied_once(moto: Moto) -> None:
    arn = moto.table("t")
    add_one = [{"Update": {"TableName": "t", "Key": {"pk": {"S": "a"}}, "UpdateExpression": "ADD n :one",
                           "ExpressionAttributeValues": {":one": {"N": "1"}}}},
               {"Put": {"TableName": "t", "Item": put("b", 1), "ConditionExpression": "attribute_not_exists(pk)"}}]
    # The SDK's retry of an answer it lost sends the same request with the same token.
    moto.ddb.transact_write_items(TransactItems=add_one, ClientRequestToken="token-1")
    first, it = moto.read(moto.iterator(arn))
    moto.ddb.transact_write_items(TransactItems=add_one, ClientRequestToken="token-1")
    assert scan(moto, "t") == [put("a", 1), put("b", 1)]
    assert first and moto.read(it)[0] == [], "the replay wrote to the stream"
    # The same token with another request is refused; without a token, or with a new one, the
    # request runs (and here its condition cancels it).
    with pytest.raises(ClientError) as e:
        moto.ddb.transact_write_items(TransactItems=add_one[:1], ClientRequestToken="token-1")
    assert e.value.response["Error"]["Code"] == "IdempotentParameterMismatchException"
    for token in ({}, {"ClientRequestToken": "token-2"}):
        with pytest.raises(ClientError) as e:
            moto.ddb.transact_write_items(TransactItems=add_one, **token)
        assert e.value.response["Error"]["Code"] == "TransactionCanceledException"
    # A token whose request was cancelled is not remembered: the retry runs again.
    moto.ddb.delete_item(TableName="t", Key={"pk": {"S": "b"}})
    moto.ddb.transact_write_items(TransactItems=add_one, ClientRequestToken="token-2")
    assert scan(moto, "t") == [put("a", 2), put("b", 1)]


def test_a_committed_transaction_writes_and_streams_in_order(moto: Moto) -> None:
    arn = moto.table("t")
    # (moto streams two INSERTs when a transaction's update creates an item; stock moto does too.)
    moto.ddb.put_item(TableName="t", Item=put("counter", 0))
    _, it = moto.read(moto.iterator(arn))
    for i in range(5):
        moto.ddb.transact_write_items(TransactItems=[
            {"Put": {"TableName": "t", "Item": put(f"k{i}", i)}},
            {"Update": {"TableName": "t", "Key": {"pk": {"S": "counter"}}, "UpdateExpression": "ADD n :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        ])
        # A cancelled one between each: it must not disturb order or numbering.
        with pytest.raises(ClientError):
            moto.ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": "t", "Item": put(f"k{i}", 99), "ConditionExpression": "attribute_not_exists(pk)"}}])
    records, _ = moto.read(it)
    seqs = [int(r["dynamodb"]["SequenceNumber"]) for r in records]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) == 10
    keys = [r["dynamodb"]["Keys"]["pk"]["S"] for r in records]
    assert keys == [k for i in range(5) for k in (f"k{i}", "counter")]
    counter = moto.ddb.get_item(TableName="t", Key={"pk": {"S": "counter"}})["Item"]
    assert counter["n"]["N"] == "5"


def test_records_every_reader_has_passed_are_trimmed_and_numbering_stays(moto: Moto) -> None:
    arn = moto.table("t")
    it = moto.iterator(arn)
    for i in range(30):
        moto.ddb.put_item(TableName="t", Item=put(f"k{i}", i))
    records, it = moto.read(it)
    assert len(records) == 30
    last = records[-1]["dynamodb"]["SequenceNumber"]
    # A reader that starts at a sequence number it has seen still gets the next ones.
    moto.ddb.put_item(TableName="t", Item=put("k30", 30))
    after = moto.iterator(arn, "AFTER_SEQUENCE_NUMBER", last)
    records, _ = moto.read(after)
    assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in records] == ["k30"]
    assert int(records[0]["dynamodb"]["SequenceNumber"]) == int(last) + 1


def test_iterators_expire_and_passed_records_go() -> None:
    m = Moto(MOTO_SHARD_ITERATOR_TTL="2")
    try:
        arn = m.table("t")
        old = m.iterator(arn)
        reader = m.iterator(arn)
        for i in range(20):
            m.ddb.put_item(TableName="t", Item=put(f"k{i}", i))
        records, reader = m.read(reader)
        first_seq = records[0]["dynamodb"]["SequenceNumber"]
        time.sleep(2.5)
        # An iterator older than its lifetime is refused, as DynamoDB refuses one after 15 minutes.
        with pytest.raises(ClientError) as e:
            m.read(old)
        assert e.value.response["Error"]["Code"] == "ExpiredIteratorException"
        # Housekeeping has run (it runs on reads): nobody holds a position before the end, so the
        # records are gone, a fresh TRIM_HORIZON starts after them, and asking for one is refused.
        reader = m.iterator(arn, "LATEST")
        m.read(reader)
        time.sleep(1.1)
        m.read(m.iterator(arn, "LATEST"))
        records, _ = m.read(m.iterator(arn))
        assert records == []
        with pytest.raises(ClientError) as e:
            m.iterator(arn, "AT_SEQUENCE_NUMBER", first_seq)
        assert e.value.response["Error"]["Code"] == "TrimmedDataAccessException"
        # New records still arrive, numbered after the trimmed ones.
        m.ddb.put_item(TableName="t", Item=put("z", 1))
        records, _ = m.read(m.iterator(arn))
        assert [r["dynamodb"]["Keys"]["pk"]["S"] for r in records] == ["z"]
        assert int(records[0]["dynamodb"]["SequenceNumber"]) > int(first_seq) + 19
    finally:
        m.stop()


def test_a_shard_nobody_reads_keeps_its_records(moto: Moto) -> None:
    arn = moto.table("t")
    for i in range(10):
        moto.ddb.put_item(TableName="t", Item=put(f"k{i}", i))
    records, _ = moto.read(moto.iterator(arn))
    assert len(records) == 10


def test_memory_stays_flat_under_transactions_on_a_growing_table(moto: Moto) -> None:
    """Stock moto grew about 200 MB per 1,000 transactions here (every touched table deep-copied
    and kept alive); the bound below is far above what the fixed server uses and far below that."""
    arn = moto.table("refs")
    it = moto.iterator(arn)

    def round_(start: int) -> None:
        nonlocal it
        for i in range(start, start + 500):
            moto.ddb.transact_write_items(TransactItems=[
                {"Put": {"TableName": "refs", "Item": {**put(f"note-{i}", i), "blob": {"S": "x" * 400}}}},
                {"Update": {"TableName": "refs", "Key": {"pk": {"S": f"hash-{i % 12}"}}, "UpdateExpression": "ADD n :one",
                            "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            ])
            if i % 50 == 0:
                _, it = moto.read(it)
        while True:
            records, it = moto.read(it)
            if not records:
                break

    round_(0)
    base = moto.rss()
    for r in range(1, 5):
        round_(r * 500)
    grown = moto.rss() - base
    assert grown < 60 * 1024 * 1024, f"moto grew {grown / 1e6:.0f} MB over 2,000 transactions"


def test_a_query_reads_its_partition_with_moto_s_semantics(moto: Moto) -> None:
    """Queries answer from one partition (not a scan of the table), with the same results:
    order, both directions, range conditions, pages, counts, and an index still scanned."""
    moto.ddb.create_table(
        TableName="deck", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"},
                              {"AttributeName": "h", "AttributeType": "S"}],
        GlobalSecondaryIndexes=[{"IndexName": "by_h", "KeySchema": [{"AttributeName": "h", "KeyType": "HASH"}],
                                 "Projection": {"ProjectionType": "ALL"}}])
    for d in range(5):
        for f in range(40):
            moto.ddb.put_item(TableName="deck", Item={"pk": {"S": f"d{d}"}, "sk": {"S": f"f{f:03d}"}, "h": {"S": f"h{f % 7}"}})
    # Items without the index's key are not in the index (nor in the way).
    moto.ddb.put_item(TableName="deck", Item={"pk": {"S": "d9"}, "sk": {"S": "f000"}})

    def query(**kw: object) -> list[str]:
        out, start = [], None
        while True:
            page = moto.ddb.query(TableName="deck", **({"ExclusiveStartKey": start} if start else {}), **kw)
            out += [f"{i.get('pk', {}).get('S')}/{i['sk']['S']}" for i in page["Items"]]
            start = page.get("LastEvaluatedKey")
            if not start:
                return out

    key = {"KeyConditionExpression": "pk = :d", "ExpressionAttributeValues": {":d": {"S": "d3"}}}
    assert query(**key) == [f"d3/f{f:03d}" for f in range(40)]
    assert query(**key, Limit=7) == [f"d3/f{f:03d}" for f in range(40)]
    assert query(**key, ScanIndexForward=False, Limit=9) == [f"d3/f{f:03d}" for f in reversed(range(40))]
    between = {"KeyConditionExpression": "pk = :d AND sk BETWEEN :a AND :b",
               "ExpressionAttributeValues": {":d": {"S": "d1"}, ":a": {"S": "f010"}, ":b": {"S": "f014"}}}
    assert query(**between) == [f"d1/f{f:03d}" for f in range(10, 15)]
    count = moto.ddb.query(TableName="deck", Select="COUNT", **key)
    assert count["Count"] == 40
    absent = {"KeyConditionExpression": "pk = :d", "ExpressionAttributeValues": {":d": {"S": "nope"}}}
    assert query(**absent) == []
    by_h = query(IndexName="by_h", KeyConditionExpression="h = :h", ExpressionAttributeValues={":h": {"S": "h2"}})
    assert sorted(by_h) == sorted(f"d{d}/f{f:03d}" for d in range(5) for f in range(40) if f % 7 == 2)
    # A hash-key-only table.
    moto.table("t")
    moto.ddb.put_item(TableName="t", Item=put("a", 1))
    page = moto.ddb.query(TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "a"}})
    assert [i["pk"]["S"] for i in page["Items"]] == ["a"]


def raw(url: str, op: str, body: dict) -> dict:
    """One DynamoDB call over plain HTTP, answered as the JSON on the wire (no SDK parsing)."""
    import json

    import requests

    auth = "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=0"
    r = requests.post(url, data=json.dumps(body), timeout=30, headers={
        "X-Amz-Target": f"DynamoDB_20120810.{op}", "Content-Type": "application/x-amz-json-1.0", "Authorization": auth})
    return {"status": r.status_code, "body": r.json()}


def test_answers_are_on_the_wire_as_stock_moto_gives_them() -> None:
    """The serializer's short cut writes every kind of attribute value (binary ones base64, nested
    maps and lists, sets, empty strings) exactly as stock moto's serializer does, in every
    operation that returns items, and errors are untouched."""
    ours = Moto()
    stock_port = free_port()
    stock = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(stock_port)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        urls = [f"http://127.0.0.1:{ours.port}", f"http://127.0.0.1:{stock_port}"]
        for _ in range(100):
            try:
                raw(urls[1], "ListTables", {})
                break
            except Exception:
                time.sleep(0.1)
        item = {"pk": {"S": "a"}, "sk": {"S": "é"}, "n": {"N": "-1.50"}, "b": {"B": "AAEC/w=="}, "e": {"S": ""},
                "ss": {"SS": ["x", "y"]}, "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": ["AQ==", "Ag=="]},
                "t": {"BOOL": True}, "z": {"NULL": True},
                "m": {"M": {"inner": {"B": "/w=="}, "l": {"L": [{"S": "s"}, {"N": "3"}, {"M": {"k": {"BOOL": False}}}]}}},
                "l": {"L": [{"B": "AA=="}, {"SS": ["q"]}]}, "g": {"S": "G"}, "n2": {"N": "010"}}
        key = {"pk": {"S": "a"}, "sk": {"S": "é"}}
        calls = [
            ("GetItem", {"TableName": "t", "Key": key}),
            ("GetItem", {"TableName": "t", "Key": key, "ProjectionExpression": "b, m.l, ns"}),
            ("GetItem", {"TableName": "t", "Key": key, "ProjectionExpression": "pk, n, e, t, z, absent, n"}),
            ("GetItem", {"TableName": "t", "Key": key, "ProjectionExpression": "n2, e"}),
            ("GetItem", {"TableName": "t", "Key": {"pk": {"S": "none"}, "sk": {"S": "x"}}}),
            ("Query", {"TableName": "t", "KeyConditionExpression": "pk = :p", "ExpressionAttributeValues": {":p": {"S": "a"}}}),
            ("Query", {"TableName": "t", "KeyConditionExpression": "pk = :p", "Limit": 1,
                       "ExpressionAttributeValues": {":p": {"S": "a"}}}),
            ("Query", {"TableName": "t", "KeyConditionExpression": "pk = :p", "ProjectionExpression": "sk, #n",
                       "FilterExpression": "#n < :z", "ExpressionAttributeNames": {"#n": "n"},
                       "ExpressionAttributeValues": {":p": {"S": "a"}, ":z": {"N": "0"}}}),
            ("Query", {"TableName": "t", "IndexName": "by_g", "KeyConditionExpression": "g = :g",
                       "ExpressionAttributeValues": {":g": {"S": "G"}}}),
            ("Query", {"TableName": "t", "IndexName": "by_g", "KeyConditionExpression": "g = :g",
                       "ProjectionExpression": "n, pk", "ExpressionAttributeValues": {":g": {"S": "G"}}}),
            ("Scan", {"TableName": "t"}),
            ("Scan", {"TableName": "t", "Limit": 1}),
            ("Scan", {"TableName": "t", "Limit": 1, "ExclusiveStartKey": key}),
            ("Scan", {"TableName": "t", "ExclusiveStartKey": {"pk": {"S": "a"}, "sk": {"S": "a"}}}),
            ("Scan", {"TableName": "t", "FilterExpression": "attribute_exists(bs)", "ProjectionExpression": "pk, sk"}),
            ("Scan", {"TableName": "t", "IndexName": "by_g"}),
            ("BatchGetItem", {"RequestItems": {"t": {"Keys": [key, {"pk": {"S": "b"}, "sk": {"S": "0"}}]}}}),
            ("BatchGetItem", {"RequestItems": {"t": {"Keys": [key, {"pk": {"S": "b"}, "sk": {"S": "0"}}],
                                                     "ProjectionExpression": "pk, sk, n, g"}}}),
            ("TransactGetItems", {"TransactItems": [{"Get": {"TableName": "t", "Key": key}}]}),
            ("UpdateItem", {"TableName": "t", "Key": key, "UpdateExpression": "SET c = :c", "ReturnValues": "ALL_NEW",
                            "ExpressionAttributeValues": {":c": {"B": "Cg=="}}}),
            ("DeleteItem", {"TableName": "t", "Key": {"pk": {"S": "b"}, "sk": {"S": "0"}}, "ReturnValues": "ALL_OLD"}),
            ("GetItem", {"TableName": "missing", "Key": key}),
            ("PutItem", {"TableName": "t", "Item": item, "ConditionExpression": "attribute_not_exists(pk)"}),
        ]
        answers = []
        for url in urls:
            raw(url, "CreateTable", {
                "TableName": "t", "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"},
                                         {"AttributeName": "g", "AttributeType": "S"}],
                "GlobalSecondaryIndexes": [{"IndexName": "by_g", "KeySchema": [{"AttributeName": "g", "KeyType": "HASH"}],
                                            "Projection": {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["n"]}}]})
            raw(url, "PutItem", {"TableName": "t", "Item": item})
            raw(url, "PutItem", {"TableName": "t", "Item": {"pk": {"S": "b"}, "sk": {"S": "0"}, "bs": {"BS": ["AA=="]}}})
            raw(url, "PutItem", {"TableName": "t", "Item": {"pk": {"S": "b"}, "sk": {"S": "1"}, "n": {"N": "-2"}, "g": {"S": "G"}}})
            answers.append([raw(url, op, body) for op, body in calls])
        for (op, _), mine, theirs in zip(calls, *answers):
            assert mine == theirs, op
        assert answers[0][0]["body"]["Item"]["b"] == {"B": "AAEC/w=="}
        assert answers[0][-1]["status"] == 400
    finally:
        ours.stop()
        stock.terminate()
        stock.wait(10)


def test_a_scan_comes_in_short_pages_that_hold_every_item_once(moto: Moto) -> None:
    """A page evaluates at most 100 items (MOTO_SCAN_PAGE_ITEMS), filters after the limit as
    DynamoDB does, and following LastEvaluatedKey yields every item exactly once."""
    moto.table("big")
    with_many = [{"PutRequest": {"Item": {"pk": {"S": f"k{i:05d}"}, "n": {"N": str(i % 3)}}}} for i in range(1234)]
    for i in range(0, len(with_many), 25):
        moto.ddb.batch_write_item(RequestItems={"big": with_many[i:i + 25]})

    def pages(**kw: object) -> list[list[str]]:
        out, start = [], None
        while True:
            page = moto.ddb.scan(TableName="big", **({"ExclusiveStartKey": start} if start else {}), **kw)
            out.append([i["pk"]["S"] for i in page["Items"]])
            assert page["ScannedCount"] <= 100, page["ScannedCount"]
            start = page.get("LastEvaluatedKey")
            if not start:
                return out

    every = pages()
    assert len(every) >= 3 and all(len(p) <= 100 for p in every)
    assert sorted(k for p in every for k in p) == [f"k{i:05d}" for i in range(1234)]
    zeros = pages(FilterExpression="n = :z", ExpressionAttributeValues={":z": {"N": "0"}})
    assert sorted(k for p in zeros for k in p) == [f"k{i:05d}" for i in range(1234) if i % 3 == 0]
    assert [len(p) for p in pages(Limit=40)][:3] == [40, 40, 40], "a smaller Limit is kept"


def stock_moto() -> tuple[subprocess.Popen, str]:
    """Stock `python -m moto.server`, for comparing answers."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            raw(url, "ListTables", {})
            break
        except Exception:
            time.sleep(0.1)
    return proc, url


def test_index_queries_follow_every_kind_of_write_as_stock_moto_does() -> None:
    """Fix 12 keeps each table's items by the value of an index's key, brought up to date from the
    keys that writes touch. A random sequence of every kind of write (puts that add, change or drop
    the indexed value, updates that SET or REMOVE it, deletes, batches, transactions that commit
    and transactions that are cancelled and roll back) on a table with a range key and on one
    without, each followed by an index Query and a paged Scan, must answer as stock moto does
    (fix 12's maps and fix 9's kept Scan order follow the writes); MOTO_CHECK_INDEXES
    also makes the server compare its map with a pass over the table on every Query."""
    import random

    ours = Moto(MOTO_CHECK_INDEXES="1")
    stock, stock_url = stock_moto()
    urls = [f"http://127.0.0.1:{ours.port}", stock_url]
    tables = {  # name → (key attributes, index key attribute)
        "holds": (["pk"], "pending"),
        "refs": (["note", "filename"], "deck_file"),
    }
    try:
        for url in urls:
            for name, (keys, indexed) in tables.items():
                raw(url, "CreateTable", {
                    "TableName": name, "BillingMode": "PAY_PER_REQUEST",
                    "KeySchema": [{"AttributeName": k, "KeyType": t} for k, t in zip(keys, ["HASH", "RANGE"])],
                    "AttributeDefinitions": [{"AttributeName": a, "AttributeType": "S"} for a in [*keys, indexed, "at"]],
                    "GlobalSecondaryIndexes": [{"IndexName": "ix", "Projection": {"ProjectionType": "ALL"}, "KeySchema": [
                        {"AttributeName": indexed, "KeyType": "HASH"}, {"AttributeName": "at", "KeyType": "RANGE"}]}]})
        rng = random.Random(12)
        values = ["v0", "v1", "v2"]

        def key(name: str) -> dict:
            return {k: {"S": rng.choice(["a", "b", "c", "d"])} for k in tables[name][0]}

        def item(name: str) -> dict:
            out = {**key(name), "at": {"S": rng.choice(["1", "2"])}, "n": {"N": str(rng.randint(0, 3))}}
            if rng.random() < 0.7:
                out[tables[name][1]] = {"S": rng.choice(values)}
            return out

        def write(name: str) -> tuple[str, dict]:
            indexed = tables[name][1]
            kind = rng.choice(["put", "set", "remove", "delete", "batch", "commit", "cancel"])
            if kind == "put":
                return "PutItem", {"TableName": name, "Item": item(name)}
            if kind in ("set", "remove"):
                expr = "SET #i = :v, #at = :at" if kind == "set" else "REMOVE #i"
                body = {"TableName": name, "Key": key(name), "UpdateExpression": expr, "ExpressionAttributeNames": {"#i": indexed}}
                if kind == "set":
                    body["ExpressionAttributeNames"]["#at"] = "at"
                    body["ExpressionAttributeValues"] = {":v": {"S": rng.choice(values)}, ":at": {"S": "3"}}
                return "UpdateItem", body
            if kind == "delete":
                return "DeleteItem", {"TableName": name, "Key": key(name)}
            if kind == "batch":
                keys = {json_key(k): k for k in (item(name) for _ in range(3))}  # a batch may not repeat a key
                return "BatchWriteItem", {"RequestItems": {name: [{"PutRequest": {"Item": i}} for i in keys.values()]}}
            first, second = item(name), item(name)
            while all(first[k] == second[k] for k in tables[name][0]):
                second = item(name)
            ops = [{"Put": {"TableName": name, "Item": first}},
                   {"Update": {"TableName": name, "Key": {k: second[k] for k in tables[name][0]},
                               "UpdateExpression": "SET #i = :v", "ExpressionAttributeNames": {"#i": indexed},
                               "ExpressionAttributeValues": {":v": {"S": rng.choice(values)}}}}]
            if kind == "cancel":  # the last item's condition fails: both writes roll back
                ops[1]["Update"]["ConditionExpression"] = "attribute_exists(never)"
            return "TransactWriteItems", {"TransactItems": ops}

        def scan_pages(url: str, name: str) -> list[dict]:
            """A whole Scan in pages of 3, following LastEvaluatedKey (fix 9's sorted keys)."""
            pages, start = [], None
            while True:
                page = raw(url, "Scan", {"TableName": name, "Limit": 3, **({"ExclusiveStartKey": start} if start else {})})
                pages.append(page)
                start = page["body"].get("LastEvaluatedKey")
                if not start or len(pages) > 50:
                    return pages

        def json_key(i: dict) -> str:
            return repr(sorted((k, v["S"]) for k, v in i.items() if k in ("pk", "note", "filename")))

        for step in range(300):
            name = rng.choice(list(tables))
            op, body = write(name)
            query = {"TableName": name, "IndexName": "ix", "KeyConditionExpression": "#i = :v",
                     "ExpressionAttributeNames": {"#i": tables[name][1]}, "ExpressionAttributeValues": {":v": {"S": rng.choice(values)}}}
            mine, theirs = [[raw(url, op, body)["status"], raw(url, "Query", query), scan_pages(url, name)] for url in urls]
            assert mine == theirs, (step, op, body)
        assert sum(raw(urls[0], "Scan", {"TableName": n})["body"]["Count"] for n in tables) > 8, "the tables filled"
    finally:
        ours.stop()
        stock.terminate()
        stock.wait(10)


def test_it_refuses_a_moto_version_its_patches_were_not_verified_on(tmp_path: pathlib.Path) -> None:
    """The pin in requirements-moto.txt is checked at start: with another version pinned beside
    the script, it exits before serving, saying how to re-verify."""
    import shutil
    from importlib.metadata import version

    script = tmp_path / "moto_server.py"
    shutil.copy(SERVER, script)
    (tmp_path / "requirements-moto.txt").write_text("moto[server]==0.0.1\n")
    out = subprocess.run([sys.executable, str(script), "127.0.0.1", str(free_port())],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"moto {version('moto')} is installed" in out.stderr and "tests/emulator" in out.stderr, out.stderr
    # The real pin is the installed version, so the stack's server starts (the fixture above).
    pin = (SERVER.parent / "requirements-moto.txt").read_text()
    assert f"moto[server]=={version('moto')}" in pin
