#!/usr/bin/env python3
"""What the write paths' DynamoDB calls and a sweep's Scan cost in scripts/moto_server.py as the
tables grow (issue 18; BENCHMARKS.md, the soak section).

    $TOOLS_VENV/bin/python benchmarks/moto-growth.py

Part 1: tables shaped as the service's (media, deck index, references with `by_file`, quotas with
the sparse `pending` index) grown 1,000 → 40,000 items; the median of 21 calls of each kind the
uploads and references routes make. Part 2: a media table of 11,000 records Scanned page by page
with the sweep's filter, at MOTO_SCAN_PAGE_ITEMS 500 and 100. boto3 over HTTP, so the times
include the client's parsing, the same for every row.
"""
import hashlib, pathlib, sys, time
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "emulator"))
import test_moto_server as t

m = t.Moto()
d = m.ddb
S = lambda v: {"S": v}
def mk(name, keys, gsi=None):
    attrs = sorted({k for k, _ in keys} | ({k for k, _ in gsi[1]} if gsi else set()))
    kw = dict(TableName=name, BillingMode="PAY_PER_REQUEST",
              KeySchema=[{"AttributeName": k, "KeyType": kt} for k, kt in keys],
              AttributeDefinitions=[{"AttributeName": a, "AttributeType": "S"} for a in attrs],
              StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"})
    if gsi:
        kw["GlobalSecondaryIndexes"] = [{"IndexName": gsi[0], "KeySchema": [{"AttributeName": k, "KeyType": kt} for k, kt in gsi[1]], "Projection": {"ProjectionType": "ALL"}}]
    d.create_table(**kw)
mk("media", [("hash", "HASH")])
mk("deck_files", [("deck", "HASH"), ("filename", "RANGE")])
mk("refs", [("note", "HASH"), ("filename", "RANGE")], ("by_file", [("deck_file", "HASH"), ("note", "RANGE")]))
mk("quotas", [("pk", "HASH")], ("pending", [("pending", "HASH"), ("issued_at", "RANGE")]))
now = "2026-12-03T00:00:00.000000000Z"
n = 0
def grow(k):
    global n
    for start in range(n, n + k, 25):
        b = range(start, min(n + k, start + 25))
        h = {i: hashlib.sha256(str(i).encode()).hexdigest() for i in b}
        d.batch_write_item(RequestItems={
            "refs": [{"PutRequest": {"Item": {"note": S(f"seed#{i}"), "filename": S(f"f{i}.png"), "hash": S(h[i]), "deck": S("seed"), "note_id": S(str(i)), "deck_file": S(f"seed#f{i}.png"), "updated_at": S(now)}}} for i in b],
            "media": [{"PutRequest": {"Item": {"hash": S(h[i]), "status": S("ready"), "ref_count": {"N": "1"}, "updated_at": S(now)}}} for i in b],
            "deck_files": [{"PutRequest": {"Item": {"deck": S("seed"), "filename": S(f"f{i}.png"), "notes": {"N": "1"}, f"c_{h[i]}": {"N": "1"}}}} for i in b],
            "quotas": [{"PutRequest": {"Item": {"pk": S(f"hold#u#{i}"), "user": S("u"), "day": S("d"), "hash": S(h[i]), "bytes": {"N": "10"}, "issued_at": S(now), **({"pending": S(h[i])} if i % 10 == 0 else {})}}} for i in b],
        })
    n += k

def timeit(f, reps=21):
    ts = []
    for r in range(reps):
        t0 = time.perf_counter(); f(r); ts.append(time.perf_counter() - t0)
    return sorted(ts)[reps // 2] * 1000

def q_pending(r):
    d.query(TableName="quotas", IndexName="pending", KeyConditionExpression="#p = :h", ExpressionAttributeNames={"#p": "pending"}, ExpressionAttributeValues={":h": S("x" * 64)})
def q_byfile(r):
    d.query(TableName="refs", IndexName="by_file", KeyConditionExpression="#p = :h", ExpressionAttributeNames={"#p": "deck_file"}, ExpressionAttributeValues={":h": S("seed#f5.png")})
def q_note(r):
    d.query(TableName="refs", KeyConditionExpression="#p = :h", ExpressionAttributeNames={"#p": "note"}, ExpressionAttributeValues={":h": S("seed#5")}, ConsistentRead=True)
def tx(r):
    h = hashlib.sha256(f"tx{n}-{r}".encode()).hexdigest()
    d.transact_write_items(TransactItems=[
        {"Put": {"TableName": "refs", "Item": {"note": S(f"w#{n}-{r}"), "filename": S("a.png"), "hash": S(h), "deck": S("w"), "note_id": S("1"), "deck_file": S("w#a.png"), "updated_at": S(now)}, "ConditionExpression": "attribute_not_exists(#n)", "ExpressionAttributeNames": {"#n": "note"}}},
        {"Update": {"TableName": "media", "Key": {"hash": S(h)}, "UpdateExpression": "SET #u = :now ADD #r :one", "ExpressionAttributeNames": {"#u": "updated_at", "#r": "ref_count"}, "ExpressionAttributeValues": {":now": S(now), ":one": {"N": "1"}}}},
        {"Update": {"TableName": "deck_files", "Key": {"deck": S("w"), "filename": S("a.png")}, "UpdateExpression": "SET #u = :now ADD #c :one", "ExpressionAttributeNames": {"#u": "updated_at", "#c": "notes"}, "ExpressionAttributeValues": {":now": S(now), ":one": {"N": "1"}}}},
    ])
def tx_cancel(r):
    try:
        d.transact_write_items(TransactItems=[
            {"Put": {"TableName": "refs", "Item": {"note": S("seed#5"), "filename": S("f5.png"), "hash": S("x"), "deck_file": S("seed#f5.png")}, "ConditionExpression": "attribute_not_exists(#n)", "ExpressionAttributeNames": {"#n": "note"}}},
            {"Update": {"TableName": "media", "Key": {"hash": S("y" * 64)}, "UpdateExpression": "ADD #r :one", "ExpressionAttributeNames": {"#r": "ref_count"}, "ExpressionAttributeValues": {":one": {"N": "1"}}}},
        ])
    except d.exceptions.TransactionCanceledException:
        pass
def put_hold(r):
    d.put_item(TableName="quotas", Item={"pk": S(f"hold#v#{n}-{r}"), "pending": S("z" * 64), "issued_at": S(now), "bytes": {"N": "1"}}, ConditionExpression="attribute_not_exists(pk)")
def upd_usage(r):
    d.update_item(TableName="quotas", Key={"pk": S("usage#u#d")}, UpdateExpression="ADD #b :one", ExpressionAttributeNames={"#b": "bytes"}, ExpressionAttributeValues={":one": {"N": "1"}})

ops = [("Query pending index", q_pending), ("Query by_file index", q_byfile), ("Query note", q_note), ("TransactWrite 3", tx), ("TransactWrite cancelled", tx_cancel), ("PutItem hold (GSI)", put_hold), ("UpdateItem usage", upd_usage)]
print("items | " + " | ".join(o for o, _ in ops) + " | RSS MB")
for size in [1000, 5000, 10000, 20000, 40000]:
    grow(size - n)
    print(f"{n} | " + " | ".join(f"{timeit(f):.1f}" for _, f in ops) + f" | {m.rss()/1e6:.0f}", flush=True)
m.proc.kill()

# Part 2: the sweep's Scan
for page in ["500", "100"]:
    m = t.Moto(MOTO_SCAN_PAGE_ITEMS=page)
    d = m.ddb
    d.create_table(TableName="media", BillingMode="PAY_PER_REQUEST", KeySchema=[{"AttributeName": "hash", "KeyType": "HASH"}],
                   AttributeDefinitions=[{"AttributeName": "hash", "AttributeType": "S"}])
    now = {"S": "2026-12-03T00:00:00.000000000Z"}
    for s in range(0, 11000, 25):
        d.batch_write_item(RequestItems={"media": [{"PutRequest": {"Item": {"hash": {"S": hashlib.sha256(str(i).encode()).hexdigest()}, "status": {"S": "ready"}, "ref_count": {"N": str(i % 7 and 1)}, "size": {"N": "1234"}, "created_at": now, "updated_at": now, "stored_key": {"S": "media/x"}}}} for i in range(s, s + 25)]})
    pages, start, t0 = [], None, time.perf_counter()
    while True:
        kw = {"ExclusiveStartKey": start} if start else {}
        p0 = time.perf_counter()
        r = d.scan(TableName="media", ConsistentRead=True, FilterExpression="#r = :z AND attribute_not_exists(alias_of)", ExpressionAttributeNames={"#r": "ref_count"}, ExpressionAttributeValues={":z": {"N": "0"}}, **kw)
        pages.append(time.perf_counter() - p0)
        start = r.get("LastEvaluatedKey")
        if not start: break
    pages.sort()
    print(f"page {page}: {len(pages)} pages, total {time.perf_counter()-t0:.2f} s, median {pages[len(pages)//2]*1000:.0f} ms, max {pages[-1]*1000:.0f} ms")
    m.stop()
