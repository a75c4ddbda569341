#!/usr/bin/env python3
"""A whole-deck listing and a sweep's Scan in moto, as the service sends them, with and without
the fixes that are about reading (scripts/moto_server.py, 6 to 9), side by side.

    $TOOLS_VENV/bin/python benchmarks/moto-listing.py [--files 10000]

A deck index of N files and their N media records, both shaped as the service writes them; the
listing is what the service sends for a deck: Queries of 2,000 with the `notes > 0` filter,
following LastEvaluatedKey, and BatchGetItem of 100 records with the answer's projection
(`ANSWER_FIELDS` in shared/src/store/dynamo/media.rs). The sweep's Scan is the media table with its
filter (`ref_count = 0`, not an alias), page by page. Calls go over plain HTTP and their answers
are only JSON-decoded, so the time is the server's (as for the Rust SDK), not boto3's parsing.
The server without the fixes is scripts/moto_server.py with those calls switched off.
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

# what BatchGetItem asks for (shared/src/store/dynamo/media.rs, ANSWER_FIELDS)
ANSWER_FIELDS = ("hash", "status", "size", "stored_size", "content_type", "width", "height", "reason",
                 "stored_key", "thumb_key", "stored_hash", "alias_of")


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
            "deck": {"S": "bench"}, "filename": {"S": f"image-{i:05d}.png"}, "notes": {"N": "1"},
            f"c_{hashes[i]}": {"N": "1"}, f"a_{hashes[i]}": now, "updated_at": now}}} for i in batch]})
        m.ddb.batch_write_item(RequestItems={"media": [{"PutRequest": {"Item": {
            "hash": {"S": h}, "status": {"S": "ready"}, "stored_key": {"S": f"media/{h}"}, "stored_hash": {"S": h},
            "thumb_key": {"S": f"thumbs/{h}"}, "size": {"N": "2345"}, "stored_size": {"N": "1234"},
            "content_type": {"S": "image/webp"}, "width": {"N": "64"}, "height": {"N": "48"},
            # every tenth file is no longer referenced: the sweep's Scan finds it
            "ref_count": {"N": "0" if int(h[:2], 16) % 10 == 0 else "1"}, "created_at": now,
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
        # the file's hash is in the name of its count attribute (`c_<hash>`)
        hashes += [next(k[2:] for k in i if k.startswith("c_")) for i in page["Items"]]
        start = page.get("LastEvaluatedKey")
        if not start:
            break
    queried = time.perf_counter()
    names = {f"#f{i}": f for i, f in enumerate(ANSWER_FIELDS)}
    for i in range(0, len(hashes), 100):
        keys = [{"hash": {"S": h}} for h in hashes[i:i + 100]]
        got = t.raw(url, "BatchGetItem", {"RequestItems": {"media": {
            "Keys": keys, "ConsistentRead": True, "ProjectionExpression": ",".join(names),
            "ExpressionAttributeNames": names}}})["body"]
        assert len(got["Responses"]["media"]) == len(keys)
    return queried - began, time.perf_counter() - queried, len(hashes)


def sweep_scan(url: str) -> tuple[float, int]:
    began, start, found = time.perf_counter(), None, 0
    while True:
        body = {"TableName": "media", "ConsistentRead": True,
                "FilterExpression": "#refs = :zero AND attribute_not_exists(#alias)",
                "ExpressionAttributeNames": {"#refs": "ref_count", "#alias": "alias_of"},
                "ExpressionAttributeValues": {":zero": {"N": "0"}}}
        if start:
            body["ExclusiveStartKey"] = start
        page = t.raw(url, "Scan", body)["body"]
        found += len(page["Items"])
        start = page.get("LastEvaluatedKey")
        if not start:
            return time.perf_counter() - began, found


def measure(server: pathlib.Path, label: str, files: int) -> float:
    t.SERVER = server
    m = t.Moto()
    try:
        seed(m, files)
        url = f"http://127.0.0.1:{m.port}"
        best, sweep = None, None
        for _ in range(3):
            q, b, n = listing(url)
            assert n == files
            if best is None or q + b < sum(best):
                best = (q, b)
            took, found = sweep_scan(url)
            assert found == sum(1 for i in range(files) if int(hashlib.sha256(str(i).encode()).hexdigest()[:2], 16) % 10 == 0)
            sweep = took if sweep is None else min(sweep, took)
        q, b = best
        print(f"{label:>28}: {files} files listed in {q + b:6.2f} s (Query {q:5.2f} s, BatchGetItem {b:5.2f} s; "
              f"{(q + b) / files * 1000:.3f} ms per file); the sweep's Scan {sweep:5.2f} s; best of 3", flush=True)
        return q + b
    finally:
        m.stop()


FIXES = ("attribute_values_as_they_are", "plain_values_first", "copy_and_project_plain_values",
         "scan_from_the_start_key")


def without(fixed: pathlib.Path, tmp: str, fixes: tuple[str, ...]) -> pathlib.Path:
    text = fixed.read_text()
    for fix in fixes:
        call = f"    {fix}()\n"
        assert call in text, call
        text = text.replace(call, "    pass\n")
    path = pathlib.Path(tmp) / f"moto_server_without_{len(fixes)}.py"
    path.write_text(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=10000)
    files = ap.parse_args().files
    fixed = ROOT / "scripts" / "moto_server.py"
    with tempfile.TemporaryDirectory() as tmp:
        slow = measure(without(fixed, tmp, FIXES), "without 6-9", files)
        half = measure(without(fixed, tmp, FIXES[2:]), "with 6 and 7, without 8 and 9", files)
        fast = measure(fixed, "with 6-9", files)
    print(f"listing: {slow / fast:.1f}x faster than without 6-9, {half / fast:.1f}x than with 6 and 7 only")


if __name__ == "__main__":
    main()
