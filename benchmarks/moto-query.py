#!/usr/bin/env python3
"""Query time in moto against the table's size, with and without `query_one_partition`
(scripts/moto_server.py), side by side in one run.

    $TOOLS_VENV/bin/python benchmarks/moto-query.py

A table of 100 partitions grows to 1,000 and then 10,000 items; at each size, 200 Queries of one
partition each are timed on both servers. The server without the fix is scripts/moto_server.py
with that one call switched off.
"""
from __future__ import annotations

import pathlib
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "emulator"))
import test_moto_server as t  # noqa: E402


def measure(server: pathlib.Path, label: str) -> None:
    t.SERVER = server
    m = t.Moto()
    try:
        m.ddb.create_table(TableName="deck", BillingMode="PAY_PER_REQUEST",
                           KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                           AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}, {"AttributeName": "sk", "AttributeType": "S"}])
        n = 0
        for size in (1000, 10000):
            while n < size:
                m.ddb.batch_write_item(RequestItems={"deck": [
                    {"PutRequest": {"Item": {"pk": {"S": f"d{(n + i) % 100}"}, "sk": {"S": f"f{n + i}"}}}} for i in range(25)]})
                n += 25
            began = time.perf_counter()
            for q in range(200):
                m.ddb.query(TableName="deck", KeyConditionExpression="pk = :d", ExpressionAttributeValues={":d": {"S": f"d{q % 100}"}})
            print(f"{label:>16}: {size:6d} items, {(time.perf_counter() - began) / 200 * 1000:6.1f} ms per query", flush=True)
    finally:
        m.stop()


def main() -> None:
    fixed = ROOT / "scripts" / "moto_server.py"
    with tempfile.TemporaryDirectory() as tmp:
        without = pathlib.Path(tmp) / "moto_server_without_query_fix.py"
        without.write_text(fixed.read_text().replace("    query_one_partition()\n", "    pass\n"))
        measure(without, "without the fix")
        measure(fixed, "with the fix")


if __name__ == "__main__":
    main()
