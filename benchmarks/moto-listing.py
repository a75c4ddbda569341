#!/usr/bin/env python3
"""A whole-deck listing in moto, as POST /v1/downloads reads it, with and without
`attribute_values_as_they_are` and `plain_values_first` (scripts/moto_server.py), side by side.

    $TOOLS_VENV/bin/python benchmarks/moto-listing.py [--files 10000]

A deck index of N files and their N media records; the listing is what the service sends for a
deck: Queries of 2,000 with the `notes > 0` filter, following LastEvaluatedKey, and BatchGetItem
of 100 records at a time. Calls go over plain HTTP and their answers are only JSON-decoded, so
the time is the server's (as for the Rust SDK), not boto3's parsing. The server without the
fixes is scripts/moto_server.py with those two calls switched off.
"""
from __future__ import annotations

import argparse
import hashlib
import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "emulator"))
import test_moto_server as t  # noqa: E402


def seed(m: t.Moto, files: int) -> None:
    m.ddb.create_table(TableName="deck_files", BillingMode="PAY_PER_REQUEST",
                       KeySchema=[{"AttributeName": "deck", "KeyType": "HASH"}, {"AttributeName": "filename", "KeyType": "RANGE"}],
                       AttributeDefinitions=[{"AttributeName": "deck", "AttributeType": "S"},
                                             {"AttributeName": "filename", "AttributeType": "S"}])
    m.ddb.create_table(TableName="media", BillingMode="PAY_PER_REQUEST",
                       KeySchema=[{"AttributeName": "hash", "KeyType": "HASH"}],
                       AttributeDefinitions=[{"AttributeName": "hash", "AttributeType": "S"}])
    now = {"S": "2026-12-01T00:00:00.123456789Z"}
    for start in range(0, files, 25):
        batch = range(start, min(files, start + 25))
        hashes = {i: hashlib.sha256(str(i).encode()).hexdigest() for i in batch}
        m.ddb.batch_write_item(RequestItems={"deck_files": [{"PutRequest": {"Item": {
            "deck": {"S": "bench"}, "filename": {"S": f"image-{i:05d}.png"}, "hash": {"S": hashes[i]},
            "notes": {"N": "1"}, "updated_at": now}}} for i in batch]})
        m.ddb.batch_write_item(RequestItems={"media": [{"PutRequest": {"Item": {
            "hash": {"S": h}, "status": {"S": "ready"}, "stored_key": {"S": f"media/{h}"}, "stored_hash": {"S": h},
            "size": {"N": "2345"}, "stored_size": {"N": "1234"}, "content_type": {"S": "image/webp"},
            "width": {"N": "64"}, "height": {"N": "48"}, "ref_count": {"N": "1"}, "created_at": now,
            "updated_at": now}}} for h in hashes.values()]})


def listing(url: str) -> tuple[float, float, int]:
    began, start, hashes = time.perf_counter(), None, []
    while True:
        body = {"TableName": "deck_files", "KeyConditionExpression": "#d = :d", "FilterExpression": "#n > :z",
                "ExpressionAttributeNames": {"#d": "deck", "#n": "notes"},
                "ExpressionAttributeValues": {":d": {"S": "bench"}, ":z": {"N": "0"}}, "Limit": 2000}
        if start:
            body["ExclusiveStartKey"] = start
        page = t.raw(url, "Query", body)["body"]
        hashes += [i["hash"]["S"] for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    queried = time.perf_counter()
    for i in range(0, len(hashes), 100):
        keys = [{"hash": {"S": h}} for h in hashes[i:i + 100]]
        got = t.raw(url, "BatchGetItem", {"RequestItems": {"media": {"Keys": keys}}})["body"]
        assert len(got["Responses"]["media"]) == len(keys)
    return queried - began, time.perf_counter() - queried, len(hashes)


def measure(server: pathlib.Path, label: str, files: int) -> float:
    t.SERVER = server
    m = t.Moto()
    try:
        seed(m, files)
        best = None
        for _ in range(3):
            q, b, n = listing(f"http://127.0.0.1:{m.port}")
            assert n == files
            if best is None or q + b < sum(best):
                best = (q, b)
        q, b = best
        print(f"{label:>18}: {files} files listed in {q + b:6.2f} s (Query {q:5.2f} s, BatchGetItem {b:5.2f} s; "
              f"{(q + b) / files * 1000:.3f} ms per file; best of 3)", flush=True)
        return q + b
    finally:
        m.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    files = ap.parse_args().files
    fixed = ROOT / "scripts" / "moto_server.py"
    with tempfile.TemporaryDirectory() as tmp:
        without = pathlib.Path(tmp) / "moto_server_without_listing_fixes.py"
        text = fixed.read_text()
        for call in ("    attribute_values_as_they_are()\n", "    plain_values_first()\n"):
            assert call in text, call
            text = text.replace(call, "    pass\n")
        without.write_text(text)
        slow = measure(without, "without the fixes", files)
        fast = measure(fixed, "with the fixes", files)
    print(f"ratio: {slow / fast:.1f}x faster")


if __name__ == "__main__":
    main()
